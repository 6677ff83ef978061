//! `minerctl top`: the whole appliance on one screen, refreshed.
//!
//! What a miner checks on a box left running: is it training and how fast, is a model on its
//! way to the chain, what was committed last and when, and is the axon answering. Laid out by
//! `ratatui` (a table: daemon, state, figures), drawn on the alternate screen and redrawn in
//! place; `--once` renders the same table into a buffer and prints it as plain text without
//! escapes (scripts, tests, a bug report).

use std::time::Duration;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Paragraph, Row, Table, Widget};

use taominer_core::bus::{PredictorState, TrainerState, WorkState};

use crate::snapshot::Snapshot;

/// `12m 03s`, `2h 05m`, `-` when unknown.
fn duration(secs: f64) -> String {
    if !(secs.is_finite() && secs >= 0.0) {
        return "-".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn loss(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "-".into()
    }
}

/// How a state reads at a glance (live view only; `--once` prints no colours).
/// How a state is shown: the view's one judgement of the daemons' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    /// Doing its job, or rightly at rest: green.
    Good,
    /// On its way somewhere (starting, pausing, working, no model yet): yellow.
    Busy,
    /// Down or failed: red.
    Bad,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Tone::Good => Style::new().fg(Color::Green),
            Tone::Busy => Style::new().fg(Color::Yellow),
        }
    }
}

fn trainer_tone(state: TrainerState) -> Tone {
    match state {
        TrainerState::Training | TrainerState::Finished | TrainerState::Idle => Tone::Good,
        TrainerState::Failed => Tone::Bad,
        TrainerState::Starting | TrainerState::Pausing | TrainerState::Paused => Tone::Busy,
    }
}

fn work_tone(state: WorkState) -> Tone {
    match state {
        WorkState::Idle => Tone::Good,
        WorkState::Working => Tone::Busy,
    }
}

fn predictor_tone(state: PredictorState) -> Tone {
    match state {
        PredictorState::Serving | PredictorState::Idle => Tone::Good,
        PredictorState::NoModel => Tone::Busy,
    }
}

/// One daemon's row: its name, its state and tone (`None`: down) and its figures, one line each.
struct Entry {
    name: &'static str,
    state: Option<(String, Tone)>,
    lines: Vec<String>,
}

fn row(
    name: &'static str,
    state: Option<(&dyn std::fmt::Display, Tone)>,
    lines: Vec<String>,
) -> Entry {
    Entry {
        name,
        state: state.map(|(s, tone)| (s.to_string(), tone)),
        lines,
    }
}

impl Entry {
    fn height(&self) -> u16 {
        self.lines.len().max(1) as u16
    }

    fn into_row(self) -> Row<'static> {
        let height = self.height();
        let (state, tone) = self.state.unwrap_or_else(|| ("down".into(), Tone::Bad));
        Row::new(vec![
            Text::from(self.name),
            Text::styled(state, tone.style()),
            Text::from(self.lines.into_iter().map(Line::from).collect::<Vec<_>>()),
        ])
        .height(height)
    }
}

/// One frame of the view: a title line, then a row per daemon.
pub struct Frame<'a> {
    pub snapshot: &'a Snapshot,
    /// The time shown in the title, UTC.
    pub now: &'a str,
    /// A last line (the live view says how to quit).
    pub footer: Option<String>,
}

impl Frame<'_> {
    fn rows(&self) -> Vec<Entry> {
        let s = self.snapshot;
        let mut rows = Vec::new();
        rows.push(match &s.trainer {
            Some(t) => {
                let mut lines = vec![
                    format!(
                        "step {} (epoch {})  loss {}  eval {}  best {}",
                        t.step,
                        t.epoch,
                        loss(t.loss),
                        loss(t.eval_loss),
                        loss(t.best_loss)
                    ),
                    format!(
                        "{:.0} tokens/s  ETA {}  candidates {}",
                        t.tokens_per_second,
                        duration(t.eta_seconds),
                        t.candidates
                    ),
                ];
                if !t.last_error.is_empty() {
                    lines.push(format!("! {}", t.last_error));
                }
                row("trainer", Some((&t.state, trainer_tone(t.state))), lines)
            }
            None => row("trainer", None, vec![]),
        });
        rows.push(match &s.publisher {
            Some(p) => {
                let counts: Vec<String> = p.jobs.iter().map(|(s, n)| format!("{n} {s}")).collect();
                let mut lines = vec![format!(
                    "jobs in flight {}  ({})",
                    p.in_flight,
                    if counts.is_empty() {
                        "no jobs".to_string()
                    } else {
                        counts.join(", ")
                    }
                )];
                if let Some(j) = &p.last {
                    lines.push(format!(
                        "last {} {} {}{}",
                        j.id,
                        j.state,
                        j.repo,
                        if j.commit.is_empty() {
                            String::new()
                        } else {
                            format!("@{}", j.commit.chars().take(12).collect::<String>())
                        }
                    ));
                }
                row("publisher", Some((&p.state, work_tone(p.state))), lines)
            }
            None => row("publisher", None, vec![]),
        });
        rows.push(match &s.committer {
            Some(c) => {
                let last = match &c.last {
                    Some(r) => format!(
                        "last commitment at block {} (job {}): {}",
                        r.block,
                        r.job_id,
                        r.commitment.chars().take(48).collect::<String>()
                    ),
                    None => "no commitment yet".into(),
                };
                row(
                    "committer",
                    Some((&c.state, work_tone(c.state))),
                    vec![last],
                )
            }
            None => row("committer", None, vec![]),
        });
        rows.push(match &s.predictor {
            Some(p) => row(
                "predictor",
                Some((&p.state, predictor_tone(p.state))),
                vec![
                    format!(
                        "served {}  rejected {}  queued {}",
                        p.served, p.rejected, p.queued
                    ),
                    p.line.clone(),
                ],
            ),
            None => row("predictor", None, vec![]),
        });
        rows
    }

    /// Lines the frame needs: title, blank, the rows, and the footer with a blank before it.
    pub fn height(&self) -> u16 {
        let rows: u16 = self.rows().iter().map(Entry::height).sum();
        2 + rows + if self.footer.is_some() { 2 } else { 0 }
    }
}

impl Widget for Frame<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let rows = self.rows();
        let table_height: u16 = rows.iter().map(Entry::height).sum();
        let [title, _, table, rest] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(table_height),
            Constraint::Fill(1),
        ])
        .areas(area);
        Paragraph::new(format!("taominer  {} UTC", self.now))
            .style(Style::new().add_modifier(Modifier::BOLD))
            .render(title, buf);
        // The widths of the hand-drawn view before it, so its lines read the same.
        Table::new(
            rows.into_iter().map(Entry::into_row),
            [
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Fill(1),
            ],
        )
        .column_spacing(1)
        .render(table, buf);
        // The footer after a blank line, when the screen has room for it.
        if let (Some(f), true) = (self.footer, rest.height >= 2) {
            let footer = Rect::new(rest.x, rest.y + 1, rest.width, 1);
            Paragraph::new(f)
                .style(Style::new().add_modifier(Modifier::DIM))
                .render(footer, buf);
        }
    }
}

/// A buffer as plain text: one line a row, trailing blanks cut.
fn plain(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            // The cell after a wide character holds an empty symbol: nothing to print.
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One frame as plain text, `width` columns wide (longer figures are cut there).
pub fn render(s: &Snapshot, now: &str, width: u16) -> String {
    let frame = Frame {
        snapshot: s,
        now,
        footer: None,
    };
    let area = Rect::new(0, 0, width, frame.height());
    let mut buf = Buffer::empty(area);
    frame.render(area, &mut buf);
    plain(&buf)
}

/// Columns for `--once`: the terminal's when printing to one, else wide enough for every figure.
fn once_width() -> u16 {
    use std::io::IsTerminal;
    const WIDE: u16 = 160;
    if std::io::stdout().is_terminal() {
        ratatui::crossterm::terminal::size()
            .map(|(w, _)| w)
            .unwrap_or(WIDE)
    } else {
        WIDE
    }
}

/// Draws frames every `every` until Ctrl-C (or prints one frame with `once`).
pub async fn run(conn: &zbus::Connection, every: Duration, once: bool) -> std::io::Result<()> {
    if once {
        print!(
            "{}",
            render(&Snapshot::read(conn).await, &now(), once_width())
        );
        return Ok(());
    }
    use ratatui::crossterm::{cursor, execute, terminal};
    // The alternate screen keeps the user's scrollback; no raw mode, so Ctrl-C stays a signal.
    let mut out = std::io::stdout();
    execute!(
        out,
        terminal::EnterAlternateScreen,
        terminal::Clear(terminal::ClearType::All),
        cursor::Hide
    )?;
    let drawn = draw_until_interrupted(conn, every).await;
    execute!(out, terminal::LeaveAlternateScreen, cursor::Show)?;
    drawn
}

async fn draw_until_interrupted(conn: &zbus::Connection, every: Duration) -> std::io::Result<()> {
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    // Not `Terminal::clear`: it asks the terminal where the cursor is, which needs raw mode and
    // a terminal that answers; the screen was cleared on entering it.
    let mut terminal = ratatui::Terminal::new(backend)?;
    loop {
        let snapshot = Snapshot::read(conn).await;
        let now = now();
        terminal.draw(|f| {
            f.render_widget(
                Frame {
                    snapshot: &snapshot,
                    now: &now,
                    footer: Some(format!("(Ctrl-C to quit; every {} s)", every.as_secs_f64())),
                },
                f.area(),
            )
        })?;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn now() -> String {
    let c = taominer_core::daemon::store::Civil::now();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Committer, Trainer};

    fn snapshot() -> Snapshot {
        Snapshot {
            trainer: Some(Trainer {
                state: taominer_core::bus::TrainerState::Training,
                step: 1200,
                epoch: 1,
                loss: 3.45211,
                eval_loss: f64::NAN,
                best_loss: 3.5,
                tokens_per_second: 1234.4,
                eta_seconds: 723.0,
                candidates: 2,
                last_error: String::new(),
                ..Default::default()
            }),
            committer: Some(Committer {
                state: taominer_core::bus::WorkState::Idle,
                commitments: 1,
                last: Some(taominer_core::bus::CommitmentRecord {
                    block: 4242,
                    job_id: "J1".into(),
                    netuid: 9,
                    hotkey: "5H".into(),
                    commitment: "ns:name:abc:hash:2".into(),
                    data_type: "Raw18".into(),
                    time: 0,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_frame_shows_every_daemon_and_says_which_are_down() {
        let f = render(&snapshot(), "2026-11-28 22:00:00", 160);
        let lines: Vec<&str> = f.lines().collect();
        assert_eq!(lines[0], "taominer  2026-11-28 22:00:00 UTC", "{f}");
        assert_eq!(
            lines[2], "trainer    training   step 1200 (epoch 1)  loss 3.4521  eval -  best 3.5000",
            "{f}"
        );
        assert_eq!(
            lines[3], "                      1234 tokens/s  ETA 12m 03s  candidates 2",
            "{f}"
        );
        assert_eq!(lines[4], "publisher  down", "{f}");
        assert!(
            lines[5].starts_with(
                "committer  idle       last commitment at block 4242 (job J1): ns:name"
            ),
            "{f}"
        );
        assert_eq!(lines[6], "predictor  down", "{f}");
        assert_eq!(lines.len(), 7, "{f}");
        assert_eq!(duration(7500.0), "2h 05m");
        assert_eq!(duration(-1.0), "-");
    }

    #[test]
    fn the_live_frame_colours_states_and_cuts_at_the_screen_edge() {
        let s = snapshot();
        let frame = Frame {
            snapshot: &s,
            now: "2026-11-28 22:00:00",
            footer: Some("(Ctrl-C to quit)".into()),
        };
        let area = Rect::new(0, 0, 40, frame.height());
        let mut buf = Buffer::empty(area);
        frame.render(area, &mut buf);
        // The state column starts at x = 11: a daemon that is down is red, a running one green.
        assert_eq!(buf[(11, 4)].symbol(), "d", "{}", plain(&buf));
        assert_eq!(buf[(11, 4)].fg, Color::Red);
        assert_eq!(buf[(11, 2)].fg, Color::Green);
        let text = plain(&buf);
        assert!(text.lines().all(|l| l.chars().count() <= 40), "{text}");
        assert_eq!(text.lines().last(), Some("(Ctrl-C to quit)"), "{text}");
    }
}
