//! `minerctl plot loss`: the trainer's loss curve, and its speed, as a PNG.
//!
//! A miner wants to see at a glance whether a run is still improving and whether it slowed down;
//! a picture in a file works over SSH, in a chat and in a bug report. Drawn by `plotters` (axes,
//! ticks, labels, legend) into an RGB buffer with its bitmap backend and an embedded DejaVu Sans
//! (through `ab_glyph`: no system fonts or fontconfig needed, so it works on a bare server), then
//! written by the `png` encoder (plotters' own encoder would bring the whole `image` crate).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// One point of the trainer's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: u64,
    pub loss: f64,
}

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 520;
/// Rows of the loss panel when the speed panel is drawn below it.
pub const LOSS_HEIGHT: u32 = 330;
/// Training loss, evaluation loss (matplotlib's first two colours), tokens/s (its third).
pub const TRAIN: RGBColor = RGBColor(31, 119, 180);
pub const EVAL: RGBColor = RGBColor(255, 127, 14);
pub const SPEED: RGBColor = RGBColor(44, 160, 44);
const FONT: &str = "sans-serif";

/// Registers the embedded font once; plotters looks fonts up by family name.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| "the embedded font could not be loaded".to_string())
}

/// `25K`, `1.5M`: step numbers as the axis shows them.
fn step_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e4 {
        format!("{}K", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// At most three decimals, trailing zeros cut.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `8.1k`: a speed on its axis.
fn speed_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// A plotters failure, said in words.
fn drawing<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the plot: {e:?}")
}

/// Draws the curves into an RGB image `WIDTH`×`HEIGHT`: the loss above, the speed below (when
/// there is one). `Ok(None)` when no loss has been recorded yet.
pub fn render(
    train: &[Point],
    eval: &[Point],
    speed: &[(u64, f64)],
) -> Result<Option<Vec<u8>>, String> {
    let finite = |p: &&Point| p.loss.is_finite();
    let train: Vec<(u64, f64)> = train
        .iter()
        .filter(finite)
        .map(|p| (p.step, p.loss))
        .collect();
    let eval: Vec<(u64, f64)> = eval
        .iter()
        .filter(finite)
        .map(|p| (p.step, p.loss))
        .collect();
    let speed: Vec<(u64, f64)> = speed
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite() && *v >= 0.0)
        .collect();
    if train.is_empty() && eval.is_empty() {
        return Ok(None);
    }
    font()?;
    // Both panels share the step axis, so a slow stretch lines up with its losses.
    let steps = train.iter().chain(&eval).chain(&speed).map(|p| p.0);
    let (x0, x1) = steps.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let x1 = x1.max(x0 + 1);
    let losses = train.iter().chain(&eval).map(|p| p.1);
    let (y0, y1) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((y1 - y0) * 0.05).max(1e-3);

    let mut px = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut px, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let (upper, lower) = if speed.is_empty() {
            (root.clone(), None)
        } else {
            let (u, l) = root.split_vertically(LOSS_HEIGHT);
            (u, Some(l))
        };
        let mut chart = ChartBuilder::on(&upper)
            .caption("loss", (FONT, 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("step")
            .y_desc("loss")
            .label_style((FONT, 13))
            .x_label_formatter(&|v| step_label(*v as f64))
            .draw()
            .map_err(drawing)?;
        chart
            .draw_series(LineSeries::new(
                train.iter().copied(),
                TRAIN.stroke_width(2),
            ))
            .map_err(drawing)?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], TRAIN.stroke_width(3)));
        chart
            .draw_series(LineSeries::new(eval.iter().copied(), EVAL.stroke_width(2)))
            .map_err(drawing)?
            .label("eval")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], EVAL.stroke_width(3)));
        // Each point is a measurement, not an interpolation: mark it (and a curve of one point
        // is still seen).
        chart
            .draw_series(train.iter().map(|&p| Circle::new(p, 2, TRAIN.filled())))
            .map_err(drawing)?;
        chart
            .draw_series(eval.iter().map(|&p| Circle::new(p, 3, EVAL.filled())))
            .map_err(drawing)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;

        if let Some(lower) = lower {
            let top = speed.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
            let mut chart = ChartBuilder::on(&lower)
                .caption("tokens/s", (FONT, 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(x0..x1, 0.0..top)
                .map_err(drawing)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_desc("step")
                .label_style((FONT, 13))
                .x_label_formatter(&|v| step_label(*v as f64))
                .y_label_formatter(&|v| speed_label(*v))
                .y_labels(5)
                .draw()
                .map_err(drawing)?;
            chart
                .draw_series(LineSeries::new(
                    speed.iter().copied(),
                    SPEED.stroke_width(2),
                ))
                .map_err(drawing)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(Some(px))
}

/// Writes the curves to `out` as a PNG.
pub fn write_png(
    out: &Path,
    train: &[Point],
    eval: &[Point],
    speed: &[(u64, f64)],
) -> Result<(), String> {
    let pixels = render(train, eval, speed)?.ok_or("no loss recorded yet: nothing to plot")?;
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    w.write_image_data(&pixels)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    w.finish().map_err(|e| format!("{}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG written to disk, decoded: (width, height, RGB pixels).
    fn decoded(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(path).expect("the PNG"),
        ));
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
        let info = reader.next_frame(&mut buf).expect("the image data");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Rows (y) holding at least one pixel of colour `c`.
    fn rows_with(px: &[u8], c: RGBColor) -> Vec<u32> {
        (0..HEIGHT)
            .filter(|&y| {
                (0..WIDTH).any(|x| {
                    let i = ((y * WIDTH + x) * 3) as usize;
                    px[i..i + 3] == [c.0, c.1, c.2]
                })
            })
            .collect()
    }

    #[test]
    fn the_png_has_both_losses_above_and_the_speed_below() {
        let train: Vec<Point> = (1..=10)
            .map(|i| Point {
                step: i * 100,
                loss: 5.0 - i as f64 * 0.3,
            })
            .collect();
        let eval = vec![
            Point { step: 0, loss: 5.2 },
            Point {
                step: 1000,
                loss: 2.2,
            },
        ];
        let speed: Vec<(u64, f64)> = (1..=1000).map(|s| (s, 8000.0 + s as f64)).collect();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("loss.png");
        write_png(&out, &train, &eval, &speed).unwrap();
        let (w, h, px) = decoded(&out);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let (t, e, s) = (
            rows_with(&px, TRAIN),
            rows_with(&px, EVAL),
            rows_with(&px, SPEED),
        );
        // A falling curve spans many rows; the legend's samples add a few more.
        assert!(t.len() > 100 && e.len() > 100, "{} {}", t.len(), e.len());
        assert!(
            t.iter().chain(&e).all(|&y| y < LOSS_HEIGHT),
            "losses in the top panel"
        );
        assert!(
            !s.is_empty() && s.iter().all(|&y| y >= LOSS_HEIGHT),
            "speed below"
        );
        // The eval curve starts higher (5.2 > 5.0): its topmost row is above the train curve's,
        // ignoring the legend box in the upper right.
        let top_of = |c: RGBColor| {
            (0..LOSS_HEIGHT).find(|&y| {
                (0..WIDTH / 2).any(|x| {
                    let i = ((y * WIDTH + x) * 3) as usize;
                    px[i..i + 3] == [c.0, c.1, c.2]
                })
            })
        };
        assert!(top_of(EVAL) < top_of(TRAIN), "eval starts higher");
        // Text was drawn (axis labels, captions, legend): dark pixels left of the plot area.
        let dark = (0..HEIGHT * 60)
            .filter(|&i| {
                let (x, y) = (i % 60, i / 60);
                let j = ((y * WIDTH + x) * 3) as usize;
                px[j] < 100 && px[j + 1] < 100 && px[j + 2] < 100
            })
            .count();
        assert!(dark > 200, "tick labels drawn: {dark} dark pixels");
    }

    #[test]
    fn without_a_speed_the_loss_takes_the_whole_image_and_without_a_loss_nothing_is_drawn() {
        let train = [Point {
            step: 10,
            loss: 3.0,
        }];
        let eval = [
            Point { step: 0, loss: 4.0 },
            Point {
                step: 10,
                loss: 2.0,
            },
        ];
        let px = render(&train, &eval, &[]).unwrap().unwrap();
        assert_eq!(px.len(), (WIDTH * HEIGHT * 3) as usize);
        // The lowest loss sits near the bottom of the image, below where the speed panel starts.
        assert!(rows_with(&px, EVAL).iter().any(|&y| y > LOSS_HEIGHT));
        // One training point is a curve of one point: still drawn, as its marker.
        assert!(!rows_with(&px, TRAIN).is_empty());
        assert!(rows_with(&px, SPEED).is_empty());
        assert_eq!(render(&[], &[], &[(1, 10.0)]), Ok(None));
        let nan = [Point {
            step: 1,
            loss: f64::NAN,
        }];
        assert_eq!(render(&nan, &[], &[]), Ok(None));
    }

    #[test]
    fn ticks_read_as_people_write_numbers() {
        assert_eq!(step_label(25_000.0), "25K");
        assert_eq!(step_label(1_500_000.0), "1.5M");
        assert_eq!(speed_label(8_100.0), "8.1k");
        assert_eq!(trim(2.500), "2.5");
    }
}
