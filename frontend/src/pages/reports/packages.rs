//! Evidence packages: request one for a month, quarter, year or custom period; follow it while the
//! cloud builds it; download it; and the hint to verify it offline with the cloud's public key.

use leptos::prelude::*;
use stayopen_shared::api::Page;
use stayopen_shared::compliance::{
    CreateEvidencePackage, EvidencePackage, EvidencePublicKey, PackageState, PeriodKind,
};
use stayopen_shared::ids::PracticeId;

use crate::api;
use crate::components::{FeedStatus, Notice, act, loading, notice_view, time_exact, use_session};
use crate::live::{Feed, feed, follow_while, utc_now};
use crate::logic::{
    Interest, PUBLIC_KEY_FILE, bytes_text, package_file_name, package_pending, package_period_text,
    percent_encode, period_bounds, previous_month, recent_quarters, recent_years, verify_command,
};

#[component]
pub fn Packages(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let can_request = session.capabilities().request_evidence;
    let packages: Feed<Page<EvidencePackage>> = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<EvidencePackage>>(
            session,
            &format!("/api/v1/evidence/packages?practice_id={practice}&limit=50"),
        )
    });
    follow_while(packages, 1_000, |page: &Page<EvidencePackage>| {
        page.items.iter().any(package_pending)
    });
    let key: Feed<EvidencePublicKey> = feed(Interest::Nothing, 0.0, move || {
        api::get::<EvidencePublicKey>(session, "/api/v1/evidence/public-key")
    });
    let download_notice = RwSignal::new(None::<Notice>);

    view! {
        <section class="card section" id="report-packages" aria-labelledby="packages-heading">
            <h2 id="packages-heading">"Evidence packages"</h2>
            <p class="muted small">
                "One signed zip per period: summary.pdf (availability, drills and their sign-offs, incidents, the register, and a table mapping HIPAA 164.308(a)(7)(ii)(A)–(E) to the evidence), "
                "a CSV file per table, the practice's audit-log entries with their hash-chain head, manifest.json with every file's SHA-256, and an Ed25519 signature over the manifest. "
                "Every download is recorded in the audit log."
            </p>
            {can_request.then(|| view! { <RequestForm practice on_requested=move || packages.reload() /> })}
            {notice_view(download_notice)}
            <FeedStatus feed=packages what="the packages" />
            {loading(packages)}
            {move || packages.data.get().map(|page| {
                if page.items.is_empty() {
                    return view! { <p class="muted" id="no-packages">"No package requested yet."</p> }.into_any();
                }
                view! {
                    <div class="table-wrap">
                        <table class="data-table" id="package-table">
                            <thead>
                                <tr>
                                    <th scope="col">"Period"</th>
                                    <th scope="col">"Requested"</th>
                                    <th scope="col">"State"</th>
                                    <th scope="col" class="num">"Size"</th>
                                    <th scope="col">"SHA-256 of the zip"</th>
                                    <th scope="col"><span class="visually-hidden">"Download"</span></th>
                                </tr>
                            </thead>
                            <tbody>
                                {page.items.into_iter().map(|p| package_row(p, download_notice)).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            })}
            <VerifyHint key />
        </section>
    }
}

fn package_row(p: EvidencePackage, notice: RwSignal<Option<Notice>>) -> impl IntoView {
    let session = use_session();
    let state = p.state.as_str();
    let file_name = package_file_name(&p);
    let busy = RwSignal::new(false);
    let progress = match p.state {
        PackageState::Queued | PackageState::Building => view! {
            <div class="package-progress">
                <progress max="100" value=p.progress_pct.to_string() aria-label="Progress"></progress>
                <span class="small">{format!("{}% · {}", p.progress_pct, p.status)}</span>
            </div>
        }
        .into_any(),
        PackageState::Failed => view! { <div class="small bad-text">{p.status.clone()}</div> }.into_any(),
        PackageState::Ready => view! {
            <div class="small muted">"Built "{time_exact(p.finished_at)}</div>
        }
        .into_any(),
    };
    let download = p
        .download_path
        .clone()
        .filter(|_| p.state == PackageState::Ready)
        .map(|path| {
            let name = file_name.clone();
            let path_attr = path.clone();
            let get = move |_| {
                let path = path.clone();
                let name = name.clone();
                act(
                    busy,
                    notice,
                    format!("Downloaded {name}."),
                    async move { api::download(session, &path, &name, "application/zip").await },
                    |_| {},
                );
            };
            view! {
                <button type="button" class="button button-primary button-small package-download"
                    data-download-path=path_attr data-file-name=file_name.clone()
                    disabled=move || busy.get() on:click=get>
                    "Download"
                </button>
            }
        });
    view! {
        <tr data-package-id=p.id.to_string() data-state=state data-period=p.period.as_str()
            data-from=p.from.to_string() data-to=p.to.to_string()>
            <th scope="row" data-label="Period">
                {package_period_text(p.period, p.from, p.to)}
                <div class="muted small">{p.period.as_str()}</div>
            </th>
            <td class="small" data-label="Requested">{p.requested_by.clone()}<div class="muted">{time_exact(Some(p.requested_at))}</div></td>
            <td data-label="State">
                <span class=format!("badge badge-package-{state}")>{state}</span>
                {progress}
            </td>
            <td class="num" data-label="Size">{p.size_bytes.map(bytes_text).unwrap_or_else(|| "–".into())}</td>
            <td class="mono small hash" data-label="SHA-256 of the zip">{p.sha256.clone().unwrap_or_else(|| "–".into())}</td>
            <td>{download}</td>
        </tr>
    }
}

#[component]
fn RequestForm(
    practice: PracticeId,
    on_requested: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let today = utc_now().date_naive();
    let kind = RwSignal::new(PeriodKind::Month);
    let month = RwSignal::new(previous_month(today));
    let quarters = recent_quarters(today, 8);
    let years = recent_years(today, 6);
    let quarter = RwSignal::new(quarters.first().cloned().unwrap_or_default());
    let year = RwSignal::new(years.first().cloned().unwrap_or_default());
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let request = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let period = kind.get_untracked();
        let value = match period {
            PeriodKind::Month => month.get_untracked(),
            PeriodKind::Quarter => quarter.get_untracked(),
            PeriodKind::Year => year.get_untracked(),
            PeriodKind::Custom => from.get_untracked(),
        };
        let (first, last) = match period_bounds(period, &value, &to.get_untracked()) {
            Ok(bounds) => bounds,
            Err(problem) => {
                notice.set(Some(Notice::Failed(problem)));
                return;
            }
        };
        act(
            busy,
            notice,
            "Requested: the cloud is building the package; it is listed below with its progress.",
            api::post::<_, EvidencePackage>(
                session,
                "/api/v1/evidence/packages",
                &CreateEvidencePackage {
                    practice_id: practice,
                    period,
                    from: first,
                    to: last,
                },
            ),
            move |_| on_requested(),
        );
    };
    let kinds = [
        (PeriodKind::Month, "A month"),
        (PeriodKind::Quarter, "A quarter"),
        (PeriodKind::Year, "A year"),
        (PeriodKind::Custom, "Custom dates"),
    ];
    view! {
        <form class="toolbar package-form" id="package-form" on:submit=request>
            <div class="field field-inline">
                <label for="package-period">"Period"</label>
                <select id="package-period" on:change=move |ev| {
                    let value = event_target_value(&ev);
                    if let Ok(k) = value.parse() {
                        kind.set(k);
                    }
                }>
                    {kinds.into_iter().map(|(k, label)| view! { <option value=k.as_str()>{label}</option> }).collect_view()}
                </select>
            </div>
            {move || match kind.get() {
                PeriodKind::Month => view! {
                    <div class="field field-inline">
                        <label for="package-month">"Month"</label>
                        <input id="package-month" type="month" bind:value=month />
                    </div>
                }.into_any(),
                PeriodKind::Quarter => view! {
                    <div class="field field-inline">
                        <label for="package-quarter">"Quarter"</label>
                        <select id="package-quarter" on:change=move |ev| quarter.set(event_target_value(&ev))>
                            {quarters.iter().map(|q| view! { <option value=q.clone() selected=quarter.get_untracked() == *q>{q.replace("-Q", " Q")}</option> }).collect_view()}
                        </select>
                    </div>
                }.into_any(),
                PeriodKind::Year => view! {
                    <div class="field field-inline">
                        <label for="package-year">"Year"</label>
                        <select id="package-year" on:change=move |ev| year.set(event_target_value(&ev))>
                            {years.iter().map(|y| view! { <option value=y.clone() selected=year.get_untracked() == *y>{y.clone()}</option> }).collect_view()}
                        </select>
                    </div>
                }.into_any(),
                PeriodKind::Custom => view! {
                    <div class="field field-inline">
                        <label for="package-from">"First day"</label>
                        <input id="package-from" type="date" bind:value=from />
                    </div>
                    <div class="field field-inline">
                        <label for="package-to">"Last day"</label>
                        <input id="package-to" type="date" bind:value=to />
                    </div>
                }.into_any(),
            }}
            <button type="submit" id="package-request" class="button button-primary button-small" disabled=move || busy.get()>
                "Request a package"
            </button>
            {notice_view(notice)}
        </form>
    }
}

/// How to check a package offline, with the cloud's public key to download and its fingerprint
/// to compare with one obtained another way.
#[component]
fn VerifyHint(key: Feed<EvidencePublicKey>) -> impl IntoView {
    view! {
        <div class="verify-hint card-inset" id="verify-hint">
            <h3 class="small-heading">"Verify a package"</h3>
            <p class="small">
                "Anyone can check a downloaded package offline: every file against the manifest, and the manifest's signature against the StayOpen cloud's public key. The command names the first thing that does not match."
            </p>
            <pre class="command" id="verify-command"><code>{verify_command("FILE.zip")}</code></pre>
            <FeedStatus feed=key what="the public key" />
            {move || key.data.get().map(|k| {
                let href = format!("data:application/x-pem-file;charset=utf-8,{}", percent_encode(&k.public_key_pem));
                view! {
                    <p class="small">
                        <a id="public-key-link" href=href download=PUBLIC_KEY_FILE>
                            {format!("Download the public key ({PUBLIC_KEY_FILE}, {})", k.algorithm)}
                        </a>
                        " · fingerprint "
                        <code id="public-key-fingerprint">{k.fingerprint.clone()}</code>
                    </p>
                }
            })}
        </div>
    }
}
