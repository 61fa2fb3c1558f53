//! The comparison as an SVG bar chart: one group of bars per Service and
//! flow count, one bar per path, the peak rate on the y axis. Plain SVG,
//! so that it opens in any browser and diffs in review.

use std::fmt::Write as _;

use crate::compare::{Path, Row};

const COLOURS: [&str; 4] = ["#9e9e9e", "#1f77b4", "#d62728", "#ff7f0e"];

fn colour(p: Path) -> &'static str {
    COLOURS[p as usize % COLOURS.len()]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The peak rates of `rows`, grouped by (Services, flows).
pub fn rates(rows: &[Row], paths: &[Path]) -> String {
    let mut keys: Vec<(usize, u32)> = rows.iter().map(|r| (r.services, r.flows)).collect();
    keys.sort();
    keys.dedup();
    let top = rows
        .iter()
        .map(|r| r.peak_pps)
        .fold(0.0f64, f64::max)
        .max(1.0);
    // A round top for the axis: 1, 2 or 5 times a power of ten.
    let mag = 10f64.powf(top.log10().floor());
    let axis = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|v| *v >= top)
        .unwrap_or(10.0 * mag);
    let (left, top_px, plot_h, bar_w, gap) = (70.0, 40.0, 300.0, 18.0, 24.0);
    let group_w = bar_w * paths.len() as f64 + gap;
    let width = left + group_w * keys.len() as f64 + 20.0;
    let height = top_px + plot_h + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">Peak rate (Mpps) by Services and flows; same lab, generator and sink</text>"#
    );
    for i in 0..=5 {
        let v = axis * i as f64 / 5.0;
        let y = top_px + plot_h - plot_h * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{:.2}</text>"##,
            width - 20.0,
            left - 6.0,
            y + 4.0,
            v / 1e6
        );
    }
    for (g, k) in keys.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_w * g as f64;
        for (b, p) in paths.iter().enumerate() {
            let Some(r) = rows
                .iter()
                .find(|r| r.path == *p && (r.services, r.flows) == *k && r.skipped.is_none())
            else {
                continue;
            };
            let h = plot_h * r.peak_pps / axis;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{h:.1}" fill="{}"><title>{} {} Services {} flows: {:.3} Mpps</title></rect>"#,
                x0 + bar_w * b as f64,
                top_px + plot_h - h,
                colour(*p),
                p.name(),
                k.0,
                k.1,
                r.peak_pps / 1e6
            );
        }
        let cx = x0 + bar_w * paths.len() as f64 / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{:.0}" text-anchor="middle">{} svc</text><text x="{cx:.1}" y="{:.0}" text-anchor="middle">{} flows</text>"#,
            top_px + plot_h + 15.0,
            k.0,
            top_px + plot_h + 28.0,
            k.1
        );
    }
    for (i, p) in paths.iter().enumerate() {
        let x = left + 110.0 * i as f64;
        let y = top_px + plot_h + 55.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{y:.0}">{}</text>"#,
            y - 10.0,
            colour(*p),
            x + 16.0,
            escape(p.name())
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_measured_row_and_none_for_a_skipped_one() {
        let row = |path, pps: f64, skipped: Option<&str>| Row {
            path,
            services: 100,
            flows: 1,
            skipped: skipped.map(str::to_string),
            setup_s: 0.0,
            peak_pps: pps,
            offered_pps: pps,
            latency: None,
            note: String::new(),
        };
        let svg = rates(
            &[
                row(Path::Sluice, 800_000.0, None),
                row(Path::Iptables, 400_000.0, None),
                row(Path::Nftables, 0.0, Some("too big")),
            ],
            &[Path::Sluice, Path::Iptables, Path::Nftables],
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            2 + 3,
            "two bars, three legend keys"
        );
        assert!(svg.contains("sluice 100 Services 1 flows: 0.800 Mpps"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
