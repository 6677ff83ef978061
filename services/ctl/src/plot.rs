//! `minerctl plot loss`: the trainer's loss curve as a PNG.
//!
//! A miner wants to see at a glance whether a run is still improving; a picture in a file works
//! over SSH, in a chat and in a bug report. Plotting crates bring fonts and a dozen dependencies,
//! so this draws what a loss curve needs with the `png` encoder alone: axes, a grid with labelled
//! ticks (a 5×7 pixel font), the training loss and the evaluation loss.

use std::path::Path;

/// One point of the trainer's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: u64,
    pub loss: f64,
}

const WIDTH: usize = 900;
const HEIGHT: usize = 520;
/// Plot area inside the margins (left, top, right, bottom).
const AREA: (usize, usize, usize, usize) = (80, 40, 870, 470);
const WHITE: [u8; 3] = [255, 255, 255];
const GRID: [u8; 3] = [225, 225, 225];
const INK: [u8; 3] = [40, 40, 40];
/// Training loss, evaluation loss (matplotlib's first two colours).
pub const TRAIN: [u8; 3] = [31, 119, 180];
pub const EVAL: [u8; 3] = [255, 127, 14];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            px: WHITE.repeat(WIDTH * HEIGHT),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x < 0 || y < 0 || x >= WIDTH as i64 || y >= HEIGHT as i64 {
            return;
        }
        let i = (y as usize * WIDTH + x as usize) * 3;
        self.px[i..i + 3].copy_from_slice(&c);
    }

    /// Bresenham, `thick` pixels wide.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for ox in 0..thick {
                for oy in 0..thick {
                    self.set(x + ox - thick / 2, y + oy - thick / 2, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 5×7 font at `scale`, top-left at (x, y).
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3], scale: i64) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for a in 0..scale {
                            for b in 0..scale {
                                self.set(
                                    x + (i as i64 * 6 + col) * scale + a,
                                    y + r as i64 * scale + b,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }
}

/// 5×7 glyphs, one byte a row, high bit on the left; unknown characters are blank.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        _ => [0; 7],
    }
}

/// 1, 2 or 5 × 10^k: a tick spacing giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    }
}

fn step_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e4 {
        format!("{}K", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Draws the curves into an RGB image; `None` when there is nothing to draw.
pub fn render(train: &[Point], eval: &[Point]) -> Option<Vec<u8>> {
    let all: Vec<&Point> = train
        .iter()
        .chain(eval)
        .filter(|p| p.loss.is_finite())
        .collect();
    if all.is_empty() {
        return None;
    }
    let (mut x0, mut x1) = (u64::MAX, 0u64);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in &all {
        x0 = x0.min(p.step);
        x1 = x1.max(p.step);
        y0 = y0.min(p.loss);
        y1 = y1.max(p.loss);
    }
    if x1 == x0 {
        x1 = x0 + 1;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (left, top, right, bottom) = AREA;
    let (left, top, right, bottom) = (left as i64, top as i64, right as i64, bottom as i64);
    let sx = |s: u64| left + ((s - x0) as f64 / (x1 - x0) as f64 * (right - left) as f64) as i64;
    let sy = |l: f64| bottom - ((l - y0) / (y1 - y0) * (bottom - top) as f64) as i64;

    let mut c = Canvas::new();
    let ys = nice_step(y1 - y0, 6.0);
    let mut v = (y0 / ys).ceil() * ys;
    while v <= y1 {
        let y = sy(v);
        c.line((left, y), (right, y), GRID, 1);
        let label = trim(v);
        c.text(
            left - 8 - Canvas::text_width(&label, 2),
            y - 7,
            &label,
            INK,
            2,
        );
        v += ys;
    }
    let xs = nice_step((x1 - x0) as f64, 8.0).max(1.0);
    let mut v = ((x0 as f64) / xs).ceil() * xs;
    while v <= x1 as f64 {
        let x = sx(v as u64);
        c.line((x, top), (x, bottom), GRID, 1);
        let label = step_label(v);
        c.text(
            x - Canvas::text_width(&label, 2) / 2,
            bottom + 10,
            &label,
            INK,
            2,
        );
        v += xs;
    }
    c.line((left, top), (left, bottom), INK, 2);
    c.line((left, bottom), (right, bottom), INK, 2);
    for (points, colour) in [(train, TRAIN), (eval, EVAL)] {
        let pts: Vec<(i64, i64)> = points
            .iter()
            .filter(|p| p.loss.is_finite())
            .map(|p| (sx(p.step), sy(p.loss)))
            .collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], colour, 2);
        }
        for p in &pts {
            c.line(*p, *p, colour, 5);
        }
    }
    // Legend and axis names.
    c.text(left, 10, "LOSS", INK, 2);
    c.line((right - 250, 17), (right - 220, 17), TRAIN, 3);
    c.text(right - 212, 10, "TRAIN", INK, 2);
    c.line((right - 130, 17), (right - 100, 17), EVAL, 3);
    c.text(right - 92, 10, "EVAL", INK, 2);
    c.text(
        right - Canvas::text_width("STEP", 2),
        bottom + 30,
        "STEP",
        INK,
        2,
    );
    Some(c.px)
}

/// Writes the curves to `out` as a PNG.
pub fn write_png(out: &Path, train: &[Point], eval: &[Point]) -> Result<(), String> {
    let pixels = render(train, eval).ok_or("no loss recorded yet: nothing to plot")?;
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
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

    fn pixel(px: &[u8], x: usize, y: usize) -> [u8; 3] {
        let i = (y * WIDTH + x) * 3;
        [px[i], px[i + 1], px[i + 2]]
    }

    #[test]
    fn curves_are_drawn_where_their_points_are() {
        let train: Vec<Point> = (0..=10)
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
        let px = render(&train, &eval).unwrap();
        assert_eq!(px.len(), WIDTH * HEIGHT * 3);
        let count = |c: [u8; 3]| {
            (0..WIDTH * HEIGHT)
                .filter(|i| px[i * 3..i * 3 + 3] == c)
                .count()
        };
        assert!(count(TRAIN) > 500, "train curve drawn");
        assert!(count(EVAL) > 500, "eval curve drawn");
        // The first training point sits at the left edge, the highest loss near the top.
        let (left, _, _, bottom) = AREA;
        let top_train = (AREA.1..bottom)
            .find(|&y| pixel(&px, left + 1, y) == TRAIN)
            .unwrap();
        let top_eval = (AREA.1..bottom)
            .find(|&y| pixel(&px, left + 1, y) == EVAL)
            .unwrap();
        assert!(top_eval < top_train, "eval starts higher (5.2 > 5.0)");
        assert!(render(&[], &[]).is_none());
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.37, 6.0), 0.05);
        assert_eq!(step_label(25_000.0), "25K");
        assert_eq!(trim(2.500), "2.5");
    }
}
