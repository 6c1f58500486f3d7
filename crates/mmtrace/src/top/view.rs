//! The live view's screen and keys: the ranked rows, recent kills and detections, and what
//! the user chose to sort, group and filter by. Everything a traced process named (comms,
//! container names) is escaped before it reaches the terminal.

use std::collections::BTreeMap;

use mmtrace_events::text::escape;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::stats::{Rates, Stats};
use crate::analyze::{Kill, Sighting};
use crate::containers;
use crate::units;

/// Kills and detections listed under the table.
pub const RECENT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Time,
    Calls,
    Failures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Processes,
    Containers,
}

/// What a key asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Nothing,
}

/// What the user chose, and what was said at start.
pub struct View {
    sort: Sort,
    group: Group,
    /// Lower case: names match whatever their case.
    filter: String,
    /// The filter being typed after `/`, until Enter or Esc.
    typing: Option<String>,
    /// mmtrace's own messages from the start (events or features this kernel lacks, container
    /// runtimes that do not answer), shown until a key is pressed.
    notes: Vec<String>,
}

/// What a frame shows besides the choices.
pub struct Data<'a> {
    pub stats: &'a Stats,
    pub lost: u64,
    pub kills: &'a [Kill],
    pub sightings: &'a [Sighting<'a>],
}

/// One row of the table: a process, or a container with its processes.
#[derive(Debug)]
struct Row {
    /// The process's host pid; None for a container.
    pid: Option<u32>,
    /// Escaped: the comm, or the container's name.
    name: String,
    /// The short id, or `-` outside containers.
    container: String,
    /// One of its processes' cgroups, which names the container.
    cgroup_id: u64,
    rates: Rates,
    locked: Option<u64>,
    /// RLIMIT_MEMLOCK of a process; None when unlimited or for a container, whose
    /// processes each have their own.
    limit: Option<u64>,
    pids: Vec<u32>,
}

impl View {
    pub fn new(notes: Vec<String>) -> View {
        View {
            sort: Sort::Time,
            group: Group::Processes,
            filter: String::new(),
            typing: None,
            notes,
        }
    }

    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        self.notes.clear();
        if let Some(text) = &mut self.typing {
            match k.code {
                KeyCode::Enter => {
                    self.filter = text.to_lowercase();
                    self.typing = None;
                }
                KeyCode::Esc => self.typing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                // Only what can be seen: the filter is echoed on the screen.
                KeyCode::Char(c) if !c.is_control() => text.push(c),
                _ => return Action::Nothing,
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('t') => self.sort = Sort::Time,
            KeyCode::Char('c') => self.sort = Sort::Calls,
            KeyCode::Char('f') => self.sort = Sort::Failures,
            KeyCode::Char('p') => {
                self.group = match self.group {
                    Group::Processes => Group::Containers,
                    Group::Containers => Group::Processes,
                }
            }
            KeyCode::Char('/') => self.typing = Some(self.filter.clone()),
            KeyCode::Esc => self.filter.clear(),
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    pub fn draw(&self, f: &mut Frame, data: &Data) {
        let [head, status, table, kills, detections, keys] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1 + RECENT as u16),
            Constraint::Length(1 + RECENT as u16),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(Paragraph::new(self.header(data)), head);
        f.render_widget(Paragraph::new(self.status()), status);
        // The header row takes one line of the table's area.
        let shown = usize::from(table.height.saturating_sub(1));
        f.render_widget(self.table(data.stats, shown), table);
        f.render_widget(Paragraph::new(kill_lines(data.kills)), kills);
        f.render_widget(Paragraph::new(detection_lines(data.sightings)), detections);
        let help = "t time  c calls  f failures  p processes/containers  / filter  q quit";
        f.render_widget(Paragraph::new(help).style(reversed()), keys);
    }

    fn header(&self, data: &Data) -> Line<'static> {
        let what = match self.group {
            Group::Processes => "processes",
            Group::Containers => "containers",
        };
        let by = match self.sort {
            Sort::Time => "time in calls",
            Sort::Calls => "calls",
            Sort::Failures => "failures",
        };
        let text = format!(
            "mmtrace top: {what} by {by}, {:.0} events/s, lost {}",
            data.stats.events_rate, data.lost
        );
        let style = match data.lost {
            0 => Style::new(),
            _ => Style::new().add_modifier(Modifier::BOLD),
        };
        Line::styled(text, style)
    }

    fn status(&self) -> String {
        if let Some(text) = &self.typing {
            return format!("filter: {}_ (Enter to apply, Esc to cancel)", escape(text));
        }
        if let Some(first) = self.notes.first() {
            let more = match self.notes.len() {
                1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            return format!("{first}{more}");
        }
        match self.filter.as_str() {
            "" => String::new(),
            f => format!("filter: {} (Esc to clear)", escape(f)),
        }
    }

    fn table(&self, stats: &Stats, shown: usize) -> Table<'static> {
        let mut rows = match self.group {
            Group::Processes => process_rows(stats),
            Group::Containers => container_rows(stats),
        };
        rows.retain(|r| {
            self.filter.is_empty()
                || r.name.to_lowercase().contains(&self.filter)
                || r.container.contains(&self.filter)
        });
        let key = |r: &Row| match self.sort {
            Sort::Time => r.rates.time_ns,
            Sort::Calls => r.rates.calls,
            Sort::Failures => r.rates.failures,
        };
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
        rows.truncate(shown);
        let (first, name) = match self.group {
            Group::Processes => ("PID", "COMM"),
            Group::Containers => ("PROCS", "NAME"),
        };
        let sorted = |title: &'static str, by: Sort| {
            let style = match by == self.sort {
                true => Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                false => Style::new(),
            };
            Line::styled(title, style).right_aligned()
        };
        let header = TableRow::new(vec![
            Line::from(first).right_aligned(),
            Line::from(name),
            Line::from("CONTAINER"),
            sorted("TIME/s", Sort::Time),
            sorted("CALLS/s", Sort::Calls),
            sorted("FAIL/s", Sort::Failures),
            Line::from("LOCKED/LIM").right_aligned(),
            Line::from("RSS").right_aligned(),
        ])
        .style(reversed());
        let lines = rows.into_iter().map(|r| {
            let first = match r.pid {
                Some(pid) => pid.to_string(),
                None => r.pids.len().to_string(),
            };
            let rss = r.pids.iter().filter_map(|&p| rss(p)).reduce(|a, b| a + b);
            TableRow::new(vec![
                Line::from(first).right_aligned(),
                Line::from(r.name),
                Line::from(r.container),
                Line::from(units::duration(r.rates.time_ns as u64)).right_aligned(),
                Line::from(format!("{:.0}", r.rates.calls)).right_aligned(),
                Line::from(format!("{:.0}", r.rates.failures)).right_aligned(),
                Line::from(locked(r.locked, r.limit, r.pid.is_some())).right_aligned(),
                Line::from(rss.map_or("-".into(), size)).right_aligned(),
            ])
        });
        // 80 columns with the spaces between.
        let widths = [
            Constraint::Length(7),
            Constraint::Length(15),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(11),
            Constraint::Length(7),
        ];
        Table::new(lines, widths).header(header)
    }
}

fn reversed() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

fn process_rows(stats: &Stats) -> Vec<Row> {
    stats
        .processes()
        .map(|(pid, p)| Row {
            pid: Some(pid),
            name: escape(p.comm.as_bytes()).into_owned(),
            container: containers::short_id(p.cgroup_id).unwrap_or_else(|| "-".into()),
            cgroup_id: p.cgroup_id,
            rates: p.rates,
            locked: p.locked.map(|l| l.locked_bytes),
            limit: p.locked.and_then(|l| l.limit_bytes),
            pids: vec![pid],
        })
        .collect()
}

/// Processes summed by container; those outside any make one row, `-`.
fn container_rows(stats: &Stats) -> Vec<Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for r in process_rows(stats) {
        let row = rows.entry(r.container.clone()).or_insert_with(|| Row {
            pid: None,
            name: match containers::of_cgroup(r.cgroup_id) {
                Some(c) => escape(c.info.name.as_deref().unwrap_or("?")).into_owned(),
                None => "(host)".into(),
            },
            container: r.container.clone(),
            cgroup_id: r.cgroup_id,
            rates: Rates::default(),
            locked: None,
            limit: None,
            pids: Vec::new(),
        });
        row.rates.add(&r.rates);
        if let Some(l) = r.locked {
            row.locked = Some(row.locked.unwrap_or(0) + l);
        }
        row.pids.extend(r.pids);
    }
    rows.into_values().collect()
}

/// A size as the table's few columns fit it: 512B, 12K, 1.5M.
fn size(n: u64) -> String {
    let mut out = String::new();
    units::write_bytes(&mut out, n);
    out.replace("iB", "")
}

/// `1.5M/64M`; `-` while no call reported it. A container's processes each have a limit
/// of their own, so its row gives the sum alone.
fn locked(bytes: Option<u64>, limit: Option<u64>, has_limit: bool) -> String {
    match (bytes, limit, has_limit) {
        (None, ..) => "-".into(),
        (Some(b), Some(l), true) => format!("{}/{}", size(b), size(l)),
        (Some(b), None, true) => format!("{}/unlim", size(b)),
        (Some(b), _, false) => size(b),
    }
}

/// Resident memory of `pid` from /proc/PID/statm, None once it is gone.
fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

fn kill_lines(kills: &[Kill]) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled("Recent kills", reversed())];
    if kills.is_empty() {
        lines.push(Line::from("  none seen"));
    }
    for k in kills {
        let name = k
            .target_name
            .as_deref()
            .map_or(String::new(), |n| format!(" {}", escape(n)));
        let by = match (&k.via, &k.killer_name) {
            (Some(via), _) if via == "oom_kill" => " by the OOM killer".to_string(),
            (_, Some(n)) => format!(" by {}", escape(n)),
            _ => String::new(),
        };
        let back = match (k.memory_back_ns, k.memory_back_by) {
            (Some(ns), Some("exit_start")) => format!("back >= {}", units::duration(ns)),
            (Some(ns), Some(by)) => format!("back in {} ({by})", units::duration(ns)),
            _ => "memory not back yet".into(),
        };
        let signal = k.signal.as_deref().unwrap_or("-");
        lines.push(Line::from(format!(
            "  {}{name}{by} {signal}: {back}",
            k.target_pid
        )));
    }
    lines
}

fn detection_lines(sightings: &[Sighting]) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled("Recent detections", reversed())];
    if sightings.is_empty() {
        lines.push(Line::from("  none raised"));
    }
    for s in sightings {
        lines.push(Line::from(format!(
            "  {} {} {} ({}) x{}: {}",
            s.detection.id,
            s.detection.severity.name(),
            escape(s.comm),
            s.pid,
            s.count,
            s.detection.title
        )));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_their_columns() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(locked(Some(3 << 19), Some(64 << 20), true), "1.5M/64M");
        assert_eq!(locked(Some(4096), None, true), "4K/unlim");
        assert_eq!(locked(Some(4096), None, false), "4K");
        assert_eq!(locked(None, None, true), "-");
    }

    #[test]
    fn keys_sort_group_filter_and_quit() {
        let key = |c| KeyEvent::from(KeyCode::Char(c));
        let mut v = View::new(vec!["mmtrace: note".into()]);
        assert_eq!(v.status(), "mmtrace: note");
        assert_eq!(v.key(key('c')), Action::Redraw);
        assert_eq!(v.sort, Sort::Calls);
        assert!(v.notes.is_empty(), "a key clears the notes");
        v.key(key('p'));
        assert_eq!(v.group, Group::Containers);
        v.key(key('/'));
        for c in "Busy\u{1b}".chars() {
            v.key(key(c));
        }
        assert_eq!(v.status(), "filter: Busy_ (Enter to apply, Esc to cancel)");
        v.key(KeyEvent::from(KeyCode::Enter));
        assert_eq!(v.filter, "busy");
        assert_eq!(v.key(key('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        v.key(key('/'));
        assert_eq!(v.key(ctrl_c), Action::Quit, "even while typing a filter");
    }
}
