//! The `status` screen: sections of aligned columns, a status word coloured only when the
//! output is a terminal. Times are printed as the API holds them (UTC), so the same Cluster
//! prints the same text whenever it is asked.

use std::fmt::Write as _;

use crate::status::{ConditionLine, Report};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

struct Paint {
    colour: bool,
}

impl Paint {
    fn with(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    /// Green for a good state, red for a bad one, yellow for one in between.
    fn state(&self, text: &str, good: Option<bool>) -> String {
        match good {
            Some(true) => self.with(GREEN, text),
            Some(false) => self.with(RED, text),
            None => self.with(YELLOW, text),
        }
    }

    fn heading(&self, text: &str) -> String {
        self.with(BOLD, text)
    }
}

/// The report as one screen of text.
pub fn text(report: &Report, colour: bool) -> String {
    let paint = Paint { colour };
    let mut out = String::new();
    summary(&mut out, report, &paint);
    section(&mut out, &paint, "Conditions", conditions(report, &paint));
    section(&mut out, &paint, "Instances", instances(report, &paint));
    section(&mut out, &paint, "Storage", storage(report));
    section(&mut out, &paint, "Archiving", archiving(report, &paint));
    section(&mut out, &paint, "Backups", backups(report, &paint));
    section(&mut out, &paint, "Backup schedules", schedules(report));
    section(&mut out, &paint, "Upgrades", upgrades(report));
    section(&mut out, &paint, "Users", dependents(&report.users, &paint));
    section(
        &mut out,
        &paint,
        "Bindings",
        dependents(&report.bindings, &paint),
    );
    section(&mut out, &paint, "Poolers", poolers(report, &paint));
    out
}

fn summary(out: &mut String, report: &Report, paint: &Paint) {
    let good = match report.phase.as_str() {
        "Ready" => Some(true),
        "Progressing" => None,
        _ => Some(false),
    };
    let _ = writeln!(
        out,
        "Cluster {}/{}: {}{}",
        report.namespace,
        report.name,
        paint.state(&report.phase, good),
        if report.up_to_date {
            ""
        } else {
            " (the controller has not seen the latest spec yet)"
        }
    );
    let version = report
        .postgres_version
        .map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(
        out,
        "PostgreSQL {version}, {} of {} instances ready{}",
        report.ready_instances,
        report.instances_wanted,
        if report.shutdown { ", shut down" } else { "" }
    );
    if report.restart_pending {
        let _ = writeln!(
            out,
            "{}",
            paint.state("A rolling restart is under way", None)
        );
    }
    let _ = writeln!(
        out,
        "Primary: {} (last change: {})",
        report.current_primary.as_deref().unwrap_or("none"),
        report
            .last_primary_change
            .map_or_else(|| "never".to_owned(), |t| t.to_string())
    );
    if let Some(image) = &report.image {
        let _ = writeln!(out, "Image: {image}");
    }
    if let Some(id) = &report.system_identifier {
        let _ = writeln!(out, "System identifier: {id}");
    }
}

/// Appends a titled section; an empty body prints "none".
fn section(out: &mut String, paint: &Paint, title: &str, rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "\n{}", paint.heading(title));
    if rows.len() <= 1 {
        let _ = writeln!(out, "  none");
        return;
    }
    out.push_str(&table(&rows));
}

/// Rows (the first is the header) as columns two spaces apart, each as wide as its widest
/// cell (colour codes do not count); a row of one cell is a note under the table and is not
/// measured.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > 1)
                .filter_map(|r| r.get(c))
                .map(|cell| visible_len(cell))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - visible_len(cell) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for ch in text.chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn condition_row(c: &ConditionLine, paint: &Paint) -> Vec<String> {
    // Degraded is the one condition whose True is bad.
    let good = match c.status.as_str() {
        "True" => Some(c.type_ != "Degraded"),
        "False" => Some(c.type_ == "Degraded" || c.type_ == "Progressing"),
        _ => None,
    };
    vec![
        c.type_.clone(),
        paint.state(&c.status, good),
        c.reason.clone(),
        c.message.clone(),
    ]
}

fn conditions(report: &Report, paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["TYPE", "STATUS", "REASON", "MESSAGE"])];
    rows.extend(report.conditions.iter().map(|c| condition_row(c, paint)));
    rows
}

fn instances(report: &Report, paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "NAME",
        "ROLE",
        "READY",
        "TIMELINE",
        "LAG",
        "REPLAY LAG",
        "PENDING RESTART",
    ])];
    rows.extend(report.instances.iter().map(|i| {
        vec![
            i.name.clone(),
            i.role.clone(),
            paint.state(if i.ready { "yes" } else { "no" }, Some(i.ready)),
            i.timeline.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            i.lag_bytes.map_or_else(|| "-".to_owned(), bytes),
            i.replay_lag_milliseconds
                .map_or_else(|| "-".to_owned(), seconds),
            if i.pending_restart {
                paint.state("yes", Some(false))
            } else {
                "no".to_owned()
            },
        ]
    }));
    rows
}

/// Milliseconds as seconds with three decimals: `0.250 s`.
fn seconds(milliseconds: i64) -> String {
    format!(
        "{}.{:03} s",
        milliseconds / 1000,
        (milliseconds % 1000).abs()
    )
}

fn storage(report: &Report) -> Vec<Vec<String>> {
    let limit = report.auto_grow_limit.as_deref().unwrap_or("off");
    let mut rows = vec![header(&["INSTANCE", "VOLUME", "USED", "SIZE", "USE%"])];
    rows.extend(report.storage.iter().map(|v| {
        vec![
            v.instance.clone(),
            v.volume.clone(),
            bytes(v.used_bytes),
            v.capacity.clone(),
            format!("{}%", v.used_percent),
        ]
    }));
    if rows.len() > 1 {
        rows.push(vec![format!(
            "requested {}, auto-grow limit {limit}",
            report.storage_size
        )]);
    }
    rows
}

fn archiving(report: &Report, paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["TYPE", "STATUS", "REASON", "MESSAGE"])];
    rows.extend(report.archiving.iter().map(|c| condition_row(c, paint)));
    rows
}

fn backups(report: &Report, paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "NAME",
        "TYPE",
        "PHASE",
        "LABEL",
        "COMPLETED",
        "SIZE",
    ])];
    rows.extend(report.backups.iter().map(|b| {
        let good = match b.phase.as_str() {
            "Completed" => Some(true),
            "Failed" => Some(false),
            _ => None,
        };
        vec![
            b.name.clone(),
            b.type_.clone(),
            paint.state(&b.phase, good),
            b.label.clone().unwrap_or_else(|| "-".to_owned()),
            b.completed_at
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            b.repository_bytes.map_or_else(|| "-".to_owned(), bytes),
        ]
    }));
    rows
}

fn schedules(report: &Report) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["NAME", "SCHEDULE", "NEXT", "LAST SUCCESSFUL"])];
    rows.extend(report.schedules.iter().map(|s| {
        vec![
            s.name.clone(),
            s.schedule.clone(),
            if s.suspended {
                "suspended".to_owned()
            } else {
                s.next.map_or_else(|| "-".to_owned(), |t| t.to_string())
            },
            s.last_successful
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        ]
    }));
    rows
}

fn upgrades(report: &Report) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["NAME", "FROM", "TO", "PHASE", "STEP"])];
    rows.extend(report.upgrades.iter().map(|u| {
        vec![
            u.name.clone(),
            u.from.to_string(),
            u.to.to_string(),
            u.phase.clone(),
            u.step.clone().unwrap_or_else(|| "-".to_owned()),
        ]
    }));
    rows
}

fn dependents(lines: &[crate::status::DependentLine], paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["NAMESPACE", "NAME", "READY", "REASON", "MESSAGE"])];
    rows.extend(lines.iter().map(|d| {
        vec![
            d.namespace.clone(),
            d.name.clone(),
            paint.state(if d.ready { "yes" } else { "no" }, Some(d.ready)),
            d.reason.clone().unwrap_or_else(|| "-".to_owned()),
            if d.ready {
                String::new()
            } else {
                d.message.clone().unwrap_or_default()
            },
        ]
    }));
    rows
}

fn poolers(report: &Report, paint: &Paint) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "NAME", "TARGET", "MODE", "PODS", "SERVICE", "READY", "REASON", "MESSAGE",
    ])];
    rows.extend(report.poolers.iter().map(|p| {
        let pods = format!("{}/{}", p.ready_instances, p.instances_wanted);
        vec![
            p.name.clone(),
            p.target.clone(),
            p.pool_mode.clone(),
            paint.state(&pods, Some(p.ready_instances >= p.instances_wanted)),
            p.service.clone().unwrap_or_else(|| "-".to_owned()),
            paint.state(if p.ready { "yes" } else { "no" }, Some(p.ready)),
            p.reason.clone().unwrap_or_else(|| "-".to_owned()),
            if p.ready {
                String::new()
            } else {
                p.message.clone().unwrap_or_default()
            },
        ]
    }));
    rows
}

/// Bytes in binary units, one decimal: `0 B`, `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn bytes(value: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if value.abs() < 1024 {
        return format!("{value} B");
    }
    let mut scaled = value as f64 / 1024.0;
    let mut unit = 0;
    while scaled.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    format!("{scaled:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn columns_align_whatever_the_colour() {
        let paint = Paint { colour: true };
        let rows = vec![
            header(&["A", "B"]),
            vec![paint.state("yes", Some(true)), "x".to_owned()],
            vec!["longer".to_owned(), "y".to_owned()],
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  A       B");
        assert_eq!(lines[1], format!("  {GREEN}yes{RESET}     x"));
        assert_eq!(lines[2], "  longer  y");
    }
}
