//! Latency and loss charts as inline SVG: no chart library, no canvas, crisp at any zoom and readable
//! by screen readers through their title and table-like summary. The geometry is in
//! [`crate::logic::chart_path`]; this draws axes, lines and the legend.

use leptos::prelude::*;
use stayopen_shared::api::{ApplianceMetrics, MetricPoint};

use crate::logic::{ChartFrame, chart_path, nice_ceiling};

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
