//! The appliance page's cellular panel: per cellular uplink, the operator, the access technology,
//! RSRP, RSRQ and SINR with their quality labels, and the data used on the SIM — what an MSP
//! places an antenna by. Hidden on appliances without a cellular uplink.

use leptos::prelude::*;
use stayopen_shared::api::ApplianceView;

use crate::logic::cellular::{CellularRow, Figure, cellular_rows};
use crate::logic::uplinks_by_priority;

fn figure_cell(class: &'static str, label: &'static str, figure: Figure) -> impl IntoView {
    let quality = figure.quality.map(|q| q.as_str());
    view! {
        <td class=format!("num {class}") data-quality=quality.unwrap_or("") data-label=label>
            {figure.text}
            {quality.map(|q| view! { " " <span class=format!("badge badge-signal-{q}")>{q}</span> })}
        </td>
    }
}

fn row(r: CellularRow) -> impl IntoView {
    let title = r.problems.join("; ");
    view! {
        <tr data-uplink=r.uplink.clone() data-status=r.status>
            <th scope="row" data-label="Uplink">
                {r.uplink.clone()}
                {r.modem.map(|m| view! { <div class="muted small modem">{m}</div> })}
            </th>
            <td class="modem-status" data-label="Modem">{r.status_text}</td>
            <td class="operator" data-label="Operator">{r.operator}</td>
            <td class="technology" data-label="Technology">{r.technology}</td>
            {figure_cell("rsrp", "RSRP", r.rsrp)}
            {figure_cell("rsrq", "RSRQ", r.rsrq)}
            {figure_cell("sinr", "SINR", r.sinr)}
            <td class="num sim-data" data-label="Data on the SIM">{r.sim_data}</td>
            <td class="problems muted" title=title.clone() data-label="Problems">
                {if r.problems.is_empty() { String::new() } else { format!("{} value(s) the modem reported made no sense", r.problems.len()) }}
            </td>
        </tr>
    }
}

#[component]
pub fn Cellular(appliance: RwSignal<Option<ApplianceView>>) -> impl IntoView {
    let rows = move || {
        appliance.with(|a| {
            a.as_ref()
                .map(|a| cellular_rows(&uplinks_by_priority(&a.uplinks)))
                .unwrap_or_default()
        })
    };
    view! {
        <Show when=move || !rows().is_empty()>
            <section class="card section" aria-labelledby="cellular-heading" id="cellular">
                <h2 id="cellular-heading">"Cellular signal"</h2>
                <p class="muted">
                    "Place the antenna where RSRP and SINR are good or excellent: RSRP at or above -90 dBm, RSRQ at or above -15 dB, SINR at or above 13 dB."
                </p>
                <div class="table-wrap">
                    <table class="data-table" id="cellular-uplinks">
                        <thead>
                            <tr>
                                <th scope="col">"Uplink"</th>
                                <th scope="col">"Modem"</th>
                                <th scope="col">"Operator"</th>
                                <th scope="col">"Technology"</th>
                                <th scope="col" class="num">"RSRP"</th>
                                <th scope="col" class="num">"RSRQ"</th>
                                <th scope="col" class="num">"SINR"</th>
                                <th scope="col" class="num">"Data on the SIM"</th>
                                <th scope="col">"Problems"</th>
                            </tr>
                        </thead>
                        <tbody>{move || rows().into_iter().map(row).collect_view()}</tbody>
                    </table>
                </div>
            </section>
        </Show>
    }
}
