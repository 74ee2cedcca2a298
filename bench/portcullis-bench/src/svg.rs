//! A small hand-written SVG plot of login latency (p50, p99) against throughput, one point per
//! step of a `logins` sweep: enough to see where latency turns up, with no plotting dependency.

use crate::modes::logins::LoginStep;
use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 400.0;
/// Margins: left (y labels), right, top (title), bottom (x labels).
const ML: f64 = 60.0;
const MR: f64 = 20.0;
const MT: f64 = 40.0;
const MB: f64 = 50.0;

pub fn plot(title: &str, steps: &[LoginStep]) -> String {
    // x: achieved logins/s; y: latency in ms. Steps without latency (all failed) are skipped.
    let pts: Vec<(f64, f64, f64)> = steps
        .iter()
        .filter_map(|s| Some((s.logins_per_s, s.latency.p50_ms?, s.latency.p99_ms?)))
        .collect();
    let xmax = nice(pts.iter().map(|p| p.0).fold(0.0, f64::max));
    let ymax = nice(pts.iter().map(|p| p.2).fold(0.0, f64::max));
    let x = |v: f64| ML + v / xmax * (W - ML - MR);
    let y = |v: f64| H - MB - v / ymax * (H - MT - MB);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Axes and ticks (5 each).
    let _ = writeln!(
        s,
        r#"<path d="M{ML},{MT} V{} H{}" stroke="black" fill="none"/>"#,
        H - MB,
        W - MR
    );
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (xv, yv) = (xmax * f, ymax * f);
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(xv),
            MT,
            H - MB,
            H - MB + 16.0,
            label(xv)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            ML,
            y(yv),
            W - MR,
            ML - 6.0,
            y(yv) + 4.0,
            label(yv)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">logins/s (achieved)</text>"#,
        (ML + W - MR) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">latency ms</text>"#,
        (MT + H - MB) / 2.0,
        (MT + H - MB) / 2.0
    );
    for (name, color, pick) in [("p50", "#1f77b4", 1usize), ("p99", "#d62728", 2usize)] {
        let coords: Vec<String> = pts
            .iter()
            .map(|p| {
                let v = if pick == 1 { p.1 } else { p.2 };
                format!("{:.1},{:.1}", x(p.0), y(v))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            coords.join(" ")
        );
        for c in &coords {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = if pick == 1 { MT + 10.0 } else { MT + 26.0 };
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            ML + 16.0,
            ML + 36.0,
            ML + 42.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten), never zero.
fn nice(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn label(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(120.0), 200.0);
        assert_eq!(nice(f64::NAN), 1.0);
    }
}
