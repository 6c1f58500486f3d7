//! `mmtrace top`: a live view of the busiest processes or containers in memory syscalls, fed
//! by the same trace as `mmtrace trace -o none` and by the same analysis as `--analyze` for
//! its kills and detections, redrawn each second.

mod stats;
mod view;

use std::io::{self, IsTerminal, Stdout};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mmtrace_bpf::Tracer;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as Input};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use crate::analyze::Analyzer;
use crate::cli::TopArgs;
use crate::privilege::Keep;
use crate::session::{self, Plan, Started};
use crate::signals::Signals;
use crate::teardown;
use stats::Stats;
use view::{Action, Data, View};

/// How often the rates are taken and the screen redrawn.
const TICK: Duration = Duration::from_secs(1);
/// How long the reader sleeps when the kernel has not woken it: also how late a key is seen.
const POLL: Duration = Duration::from_millis(10);
/// While the ring stays busy, events are read in batches of this many until SLICE has passed,
/// then the keyboard is looked at: a key is seen within SLICE however slow each event is to
/// handle (a debug build under emulation handles a few hundred a second).
const BATCH: usize = 256;
const SLICE: Duration = Duration::from_millis(50);

pub fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    if !io::stdout().is_terminal() {
        bail!("mmtrace top draws on a terminal and standard output is not one: run it in a terminal, or record with `mmtrace trace -o json:FILE`");
    }
    let plan = Plan::top(args, session::features_off().as_deref())?;
    let signals = Signals::install()?;
    let Started {
        mut tracer, notes, ..
    } = session::start(&plan.session, false, Keep::default())?;
    let result =
        Screen::enter().and_then(|mut screen| live(&mut screen, &mut tracer, &signals, notes));
    teardown::detach_after_exit(tracer);
    result.map(|()| ExitCode::SUCCESS)
}

/// Reads the ring, the keys and the signals until asked to stop, redrawing each second.
fn live(
    screen: &mut Screen,
    tracer: &mut Tracer,
    signals: &Signals,
    notes: Vec<String>,
) -> anyhow::Result<()> {
    let mut view = View::new(notes);
    let mut stats = Stats::default();
    let mut analyzer = Analyzer::live();
    let mut last_tick = Instant::now();
    let mut redraw = true;
    let mut busy = false;
    loop {
        // SIGTERM or SIGHUP; a terminal's Ctrl-C arrives as a key in raw mode.
        if !signals.take().is_empty() {
            return Ok(());
        }
        while event::poll(Duration::ZERO).context("reading the keyboard")? {
            match event::read().context("reading the keyboard")? {
                Input::Key(k) => match view.key(k) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => redraw = true,
                    Action::Nothing => {}
                },
                Input::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if !busy {
            tracer.wait(POLL)?;
        }
        let slice = Instant::now();
        loop {
            let n = tracer.drain_some(BATCH, |e| {
                stats.event(&e);
                analyzer.event(&e);
            });
            busy = n == BATCH;
            if !busy || slice.elapsed() >= SLICE {
                break;
            }
        }
        if last_tick.elapsed() >= TICK {
            stats.tick(last_tick.elapsed());
            last_tick = Instant::now();
            redraw = true;
        }
        if redraw {
            let kills = analyzer.recent_kills(view::RECENT);
            let sightings: Vec<_> = analyzer.recent_findings(view::RECENT).collect();
            let data = Data {
                stats: &stats,
                lost: tracer.lost().iter().map(|(_, n)| n).sum(),
                kills: &kills,
                sightings: &sightings,
            };
            screen
                .0
                .draw(|f| view.draw(f, &data))
                .context("drawing on the terminal")?;
            redraw = false;
        }
    }
}

/// Whether the terminal is in the view's state (raw, alternate screen, cursor hidden), for the
/// panic hook: restoring a terminal not in it would disturb the shell's screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal while the view is up; dropping it, or a panic, gives the shell its terminal
/// back as it was.
struct Screen(Terminal<CrosstermBackend<Stdout>>);

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        ACTIVE.store(true, Ordering::SeqCst);
        let screen = (|| -> io::Result<Screen> {
            terminal::enable_raw_mode()?;
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
            let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            t.clear()?;
            Ok(Screen(t))
        })();
        if screen.is_err() {
            restore();
        }
        screen.context("setting up the terminal")
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode and shows the cursor, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    }
}
