//! Latency, loss and availability charts as inline SVG: no chart library, no canvas, crisp at any zoom and readable
//! by screen readers through their title and table-like summary. The geometry is in
//! [`crate::logic::chart_path`]; this draws axes, lines and the legend.

use leptos::prelude::*;
use stayopen_shared::api::{ApplianceMetrics, MetricPoint};

use crate::logic::{
    ChartFrame, Shares, availability_text, chart_path, gap_label, nice_ceiling, stacked_bar,
};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

/// One chart of one measure (latency or loss) with a line per uplink.
#[component]
pub fn MetricsChart(
    metrics: Memo<Option<ApplianceMetrics>>,
    /// The measure drawn.
    value: fn(&MetricPoint) -> Option<f64>,
    title: &'static str,
    unit: &'static str,
    /// The lowest top of the y axis, so a quiet link is not magnified into noise.
    floor: f64,
    /// Fixed top of the y axis (loss is a percentage), overriding the data.
    #[prop(optional)]
    fixed_max: Option<f64>,
    id: &'static str,
) -> impl IntoView {
    move || {
        let m = metrics.get()?;
        let max_seen = m
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(value))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let y_max = fixed_max.unwrap_or_else(|| nice_ceiling(max_seen, floor));
        let frame = ChartFrame {
            from: m.from,
            to: m.to,
            y_max,
            width: WIDTH - LEFT - RIGHT,
            height: HEIGHT - TOP - BOTTOM,
        };
        let any_data = m
            .series
            .iter()
            .any(|s| s.points.iter().any(|p| value(p).is_some()));
        let (start_label, end_label) = match m.period {
            stayopen_shared::api::MetricsPeriod::Hour => ("1 hour ago", "now"),
            stayopen_shared::api::MetricsPeriod::Day => ("24 hours ago", "now"),
            stayopen_shared::api::MetricsPeriod::Month => ("30 days ago", "now"),
        };
        let lines = m
            .series
            .iter()
            .enumerate()
            .map(|(i, series)| {
                let d = chart_path(&series.points, value, m.bucket_secs, &frame);
                view! {
                    <path
                        class=format!("chart-line series-{}", i % 4)
                        d=d
                        data-uplink=series.uplink.clone()
                    />
                }
            })
            .collect_view();
        let legend = m
            .series
            .iter()
            .enumerate()
            .map(|(i, series)| {
                view! {
                    <li>
                        <span class=format!("legend-swatch series-{}", i % 4) aria-hidden="true"></span>
                        {series.uplink.clone()}
                    </li>
                }
            })
            .collect_view();
        let grid = [0.0, 0.5, 1.0]
            .into_iter()
            .map(|share| {
                let v = y_max * share;
                let y = TOP + frame.y(v);
                let label = if v.fract() == 0.0 {
                    format!("{v:.0} {unit}")
                } else {
                    format!("{v:.1} {unit}")
                };
                view! {
                    <line class="chart-grid" x1=LEFT x2=WIDTH - RIGHT y1=y y2=y />
                    <text class="chart-label" x=LEFT - 6.0 y=y + 4.0 text-anchor="end">{label}</text>
                }
            })
            .collect_view();
        let title_id = format!("{id}-title");
        Some(view! {
            <figure class="chart" id=id>
                <figcaption id=title_id.clone()>{title}</figcaption>
                <svg
                    viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                    role="img"
                    aria-labelledby=title_id
                    class="chart-svg"
                >
                    {grid}
                    <g transform=format!("translate({LEFT},{TOP})")>{lines}</g>
                    <text class="chart-label" x=LEFT y=HEIGHT - 4.0>{start_label}</text>
                    <text class="chart-label" x=WIDTH - RIGHT y=HEIGHT - 4.0 text-anchor="end">{end_label}</text>
                </svg>
                {(!any_data).then(|| view! { <p class="muted small chart-empty">"No measurements in this period."</p> })}
                <ul class="chart-legend">{legend}</ul>
            </figure>
        })
    }
}

/// One group of an availability chart: a period (a month, a day) with its primary-line and
/// effective bars.
#[derive(Debug, Clone, PartialEq)]
pub struct AvailabilityGroup {
    /// Under the group ("Nov", "14").
    pub label: String,
    /// The period in full, for the tooltip ("November 2026").
    pub title: String,
    pub primary: Shares,
    pub effective: Shares,
    pub primary_pct: Option<f64>,
    pub effective_pct: Option<f64>,
    pub gap_secs: u64,
    /// `data-period` of the group, for tests and links.
    pub key: String,
}

/// Wider than the metrics charts: a year of months or a month of days side by side.
const AV_WIDTH: f64 = 960.0;
const BAR_HEIGHT: f64 = 150.0;
/// Room above the bars for the label of a thin gap.
const AV_TOP: f64 = 18.0;

/// Primary-line and effective availability per period as stacked bars of the whole period: up,
/// down, and the time nobody reported on, hatched and labelled "no data" — a gap is never drawn
/// as up.
pub fn availability_chart(
    id: &'static str,
    title: String,
    groups: Vec<AvailabilityGroup>,
) -> impl IntoView {
    let n = groups.len().max(1) as f64;
    let plot_width = AV_WIDTH - LEFT - RIGHT;
    let slot = plot_width / n;
    let bar = (slot * 0.36).min(22.0);
    let height = BAR_HEIGHT;
    let total = AV_TOP + height + BOTTOM + 4.0;
    // Narrow slots (a month's days) get the "no data" label turned on its side.
    let sideways = slot < 40.0;
    let every = if n > 16.0 { 2 } else { 1 };
    let grid = [0.0, 0.5, 1.0]
        .into_iter()
        .map(|share| {
            let y = AV_TOP + height - share * height;
            view! {
                <line class="chart-grid" x1=LEFT x2=AV_WIDTH - RIGHT y1=y y2=y />
                <text class="chart-label" x=LEFT - 6.0 y=y + 4.0 text-anchor="end">
                    {format!("{:.0}%", share * 100.0)}
                </text>
            }
        })
        .collect_view();
    let drawn = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let x0 = LEFT + slot * i as f64 + (slot - 2.0 * bar - 2.0) / 2.0;
            let bars = [
                ("primary", x0, g.primary, g.primary_pct),
                ("effective", x0 + bar + 2.0, g.effective, g.effective_pct),
            ]
            .into_iter()
            .map(|(kind, x, shares, pct)| {
                let [up, down, gap] = stacked_bar(shares, height);
                let tip = format!(
                    "{} — {}: {}{}",
                    g.title,
                    if kind == "primary" { "primary line" } else { "effective" },
                    availability_text(pct),
                    gap_label(g.gap_secs).map(|l| format!(", {l}")).unwrap_or_default()
                );
                view! {
                    <g class=format!("bar bar-{kind}") data-kind=kind>
                        <title>{tip}</title>
                        <rect class=format!("bar-up bar-up-{kind}") x=x y=AV_TOP + up.0 width=bar height=up.1 />
                        <rect class="bar-down" x=x y=AV_TOP + down.0 width=bar height=down.1 />
                        // The hatch as a presentation attribute: an inline <style> would need
                        // 'unsafe-inline' in the Content-Security-Policy.
                        <rect class="bar-gap" fill=format!("url(#{id}-hatch)") x=x y=AV_TOP + gap.0 width=bar height=gap.1 />
                    </g>
                }
            })
            .collect_view();
            let centre = LEFT + slot * (i as f64 + 0.5);
            let gap_share = g.primary.gap.max(g.effective.gap);
            // A day's gap is labelled when it is a good part of the day (the table names every
            // one); a month's always, inside the hatched part or just above a thin one.
            let labelled = if sideways { gap_share >= 0.25 } else { gap_share > 0.0 };
            let gap_text = labelled.then(|| {
                let middle = AV_TOP + gap_share * height / 2.0;
                let y = if sideways || gap_share * height >= 11.0 {
                    middle
                } else {
                    AV_TOP - 6.0
                };
                if sideways {
                    view! {
                        <text class="chart-label gap-label" x=centre y=y text-anchor="middle"
                            dominant-baseline="middle"
                            transform=format!("rotate(-90 {centre} {y})")>"no data"</text>
                    }
                    .into_any()
                } else {
                    view! {
                        <text class="chart-label gap-label" x=centre y=y text-anchor="middle"
                            dominant-baseline="middle">"no data"</text>
                    }
                    .into_any()
                }
            });
            let label = (i % every == 0).then(|| {
                view! {
                    <text class="chart-label" x=centre y=AV_TOP + height + 14.0 text-anchor="middle">
                        {g.label.clone()}
                    </text>
                }
            });
            view! {
                <g class="bar-group" data-period=g.key.clone() data-gap-secs=g.gap_secs.to_string()>
                    {bars}
                    {gap_text}
                    {label}
                </g>
            }
        })
        .collect_view();
    let title_id = format!("{id}-title");
    view! {
        <figure class="chart availability-chart" id=id>
            <figcaption id=title_id.clone()>{title}</figcaption>
            <svg viewBox=format!("0 0 {AV_WIDTH} {total}") role="img" aria-labelledby=title_id class="chart-svg">
                <defs>
                    <pattern id=format!("{id}-hatch") class="hatch" width="6" height="6"
                        patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
                        <rect width="6" height="6" class="hatch-bg" />
                        <line x1="0" y1="0" x2="0" y2="6" class="hatch-line" />
                    </pattern>
                </defs>
                {grid}
                {drawn}
            </svg>
            <ul class="chart-legend">
                <li><span class="legend-box bar-up-primary" aria-hidden="true"></span>"Primary line up"</li>
                <li><span class="legend-box bar-up-effective" aria-hidden="true"></span>"Internet up (effective)"</li>
                <li><span class="legend-box bar-down" aria-hidden="true"></span>"Down"</li>
                <li><span class="legend-box legend-gap" aria-hidden="true"></span>"No data (a gap, not counted as up)"</li>
            </ul>
        </figure>
    }
}
