//! The dashboard in a real browser: headless Chromium against a real cloud, a real database and
//! simulated appliances (the real agent over simulated links) that fail over on a schedule.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{TestCloud, eventually, spawn_cloud};
use stayopen_cloud::domain::seed::DemoSeed;
use stayopen_shared::api::{Role, TotpCode, TotpSetup, UpdateUser};
use stayopen_shared::ids::ApplianceId;
use stayopen_testkit::fleet_sim::{self, FleetOptions};
use tokio::sync::watch;
use webdriver::Browser;

const PAGE: Duration = Duration::from_secs(15);

fn require_built_dashboard() {
    let dir = std::env::var_os("STAYOPEN_TEST_STATIC_DIR")
        .map(PathBuf::from)
        .expect("STAYOPEN_TEST_STATIC_DIR must name the built dashboard (frontend/dist); run infra/scripts/test.sh");
    assert!(
        dir.join("index.html").exists(),
        "{} has no index.html; build the frontend first",
        dir.display()
    );
}

/// Every field of the page shown has a name a screen reader can say: a `<label for>`, or an
/// `aria-label` where a visible label would repeat the column heading.
async fn assert_fields_are_labelled(browser: &Browser, page: &str) {
    let unlabelled = browser
        .eval(
            "return [...document.querySelectorAll('input, select, textarea')]
                 .filter(e => e.type !== 'hidden')
                 .filter(e => !(e.labels && [...e.labels].some(l => l.textContent.trim()))
                     && !(e.getAttribute('aria-label') || '').trim()
                     && !e.getAttribute('aria-labelledby'))
                 .map(e => e.id || e.outerHTML.slice(0, 80))",
        )
        .await;
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "fields without a label on the {page} page"
    );
}

/// Saves a screenshot as `{name}.png` in `STAYOPEN_SCREENSHOT_DIR` (docs/screenshots when
/// refreshing the documentation), or the temporary directory, after checking that the page's
/// fields are labelled.
async fn screenshot(browser: &Browser, name: &str) {
    assert_fields_are_labelled(browser, name).await;
    // The top of the page, or the part the test just checked when it marked one.
    browser
        .eval(
            "const m = document.querySelector('[data-screenshot]');
             if (m) { m.scrollIntoView({block: 'center'}); } else { window.scrollTo(0, 0); }
             return true",
        )
        .await;
    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::env::var_os("STAYOPEN_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&out).expect("screenshot dir");
    std::fs::write(out.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn sign_in(browser: &Browser, email: &str, password: &str) {
    browser.wait_for_element("#login-form", PAGE).await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", password).await;
    browser.click("#login-submit").await;
    browser.wait_for_element("#current-role", PAGE).await;
}

async fn appliance_id(cloud: &TestCloud, token: &str, serial: &str) -> ApplianceId {
    eventually(
        Duration::from_secs(30),
        "the appliance to enrol",
        || async {
            let page = cloud
                .api(token)
                .appliances(&format!("q={serial}"))
                .await
                .ok();
            page.and_then(|p| p.items.into_iter().find(|a| a.serial == serial))
                .map(|a| a.id)
        },
    )
    .await
}

/// Simulated appliances (the real agent over simulated links) spread over the demo's practices.
struct Fleet {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl Fleet {
    fn start(cloud: &TestCloud, demo: &DemoSeed, count: usize) -> Fleet {
        let state = tempfile::tempdir().expect("state root");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(fleet_sim::run(
            FleetOptions {
                api_url: cloud.base_url.clone(),
                enrollment_tokens: demo
                    .practices
                    .iter()
                    .map(|p| p.enrollment_token.clone())
                    .collect(),
                first_index: 0,
                count,
                state_root: state.path().join("fleet"),
                telemetry_interval_secs: 1,
            },
            stopped,
        ));
        Fleet {
            stop,
            task,
            _state: state,
        }
    }

    async fn stop(self) {
        self.stop.send(true).expect("stop");
        self.task.await.expect("fleet");
    }
}

/// A TCP relay between the browser and the cloud that the test cuts and restores, as when the
/// line between a technician and the cloud goes down.
struct Line {
    addr: SocketAddr,
    upstream: SocketAddr,
    relay: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Line {
    async fn start(cloud_url: &str) -> Line {
        let upstream: SocketAddr = cloud_url
            .trim_start_matches("http://")
            .parse()
            .expect("the cloud's address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the line");
        let addr = listener.local_addr().expect("line address");
        Line {
            addr,
            upstream,
            relay: Mutex::new(Some(Self::relay(listener, upstream))),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn relay(
        listener: tokio::net::TcpListener,
        upstream: SocketAddr,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Aborting this task drops the set, and with it every open connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        })
    }

    /// Open connections drop; new ones are refused.
    fn cut(&self) {
        if let Some(relay) = self.relay.lock().expect("line").take() {
            relay.abort();
        }
    }

    /// The same address answers again.
    fn restore(&self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuse address");
        socket.bind(self.addr).expect("bind the line again");
        let listener = socket.listen(128).expect("listen");
        *self.relay.lock().expect("line") = Some(Self::relay(listener, self.upstream));
    }
}

fn totp_code(setup: &TotpSetup, unix_secs: i64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(setup.secret_base32.as_bytes())
        .expect("base32 secret");
    stayopen_cloud::domain::access::totp::code_for_step(
        &secret,
        stayopen_cloud::domain::access::totp::step_at(unix_secs),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_is_asked_for_and_a_lost_connection_and_an_ended_session_are_said_plainly()
 {
    require_built_dashboard();
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let email = "tech@lakeside-it.example";
    let password = "correct-horse-battery";
    let tech = cloud
        .user_with_role(&admin, email, Role::MspTechnician, vec![])
        .await;
    let setup = cloud.api(&tech).totp_setup().await.expect("totp setup");
    cloud
        .api(&tech)
        .totp_confirm(&TotpCode {
            code: totp_code(&setup, chrono::Utc::now().timestamp()),
        })
        .await
        .expect("TOTP enabled");

    let line = Line::start(&cloud.base_url).await;
    let browser = Browser::start().await;
    browser.goto(&line.url()).await;

    // The password alone is not enough: the page asks for the code, then signs in with it.
    browser
        .wait_for_element("#login-form", Duration::from_secs(30))
        .await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", password).await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "const f = document.querySelector('#totp').closest('.field');
             const e = document.querySelector('#login-error');
             return !f.hidden && !!e && e.innerText.includes('6-digit code')",
            "the request for the code",
            PAGE,
        )
        .await;
    screenshot(&browser, "sign-in-code").await;
    // The confirmation spent this step's code: the next step's is the one a person would type.
    let code = totp_code(
        &setup,
        chrono::Utc::now().timestamp() + stayopen_cloud::domain::access::totp::STEP_SECS,
    );
    browser.type_into("#totp", &code).await;
    browser.click("#login-submit").await;
    browser.wait_for_element("#current-role", PAGE).await;
    browser
        .wait_for(
            "return document.querySelector('#live-indicator').dataset.state === 'live'
                 && document.querySelectorAll('.practice-row').length === 2",
            "the fleet, live",
            PAGE,
        )
        .await;

    // The line drops: the page says the cloud cannot be reached, and keeps what it showed.
    line.cut();
    browser
        .wait_for(
            "const b = document.querySelector('.connection-banner');
             return document.querySelector('#live-indicator').dataset.state === 'reconnecting'
                 && !!b && b.innerText.includes('cannot be reached')
                 && document.querySelectorAll('.practice-row').length === 2",
            "the lost connection, said plainly",
            Duration::from_secs(30),
        )
        .await;
    screenshot(&browser, "connection-lost").await;
    line.restore();
    browser
        .wait_for(
            "return document.querySelector('#live-indicator').dataset.state === 'live'
                 && !document.querySelector('.connection-banner')
                 && !!document.querySelector('#current-role')",
            "the connection back, still signed in",
            Duration::from_secs(30),
        )
        .await;

    // The admin disables the account: the page's next request is refused, and so is the
    // renewal, and the sign-in page says the session expired.
    let tech_id = cloud.user_by_email(&admin, email).await.id;
    cloud
        .api(&admin)
        .update_user(
            tech_id.0,
            &UpdateUser {
                disabled: Some(true),
                ..UpdateUser::default()
            },
        )
        .await
        .expect("disabled");
    browser.open_fragment("#/alerts").await;
    browser
        .wait_for(
            "const e = document.querySelector('#login-error');
             return !!document.querySelector('#login-form') && !!e
                 && e.innerText.includes('session expired')",
            "the ended session, said plainly",
            PAGE,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msp_admin_watches_a_failover_live_acknowledges_it_and_changes_the_policy_with_a_preview()
 {
    require_built_dashboard();
    let started = Instant::now();
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin_token = cloud.login(&demo.email, &demo.password).await;
    // Six appliances over the demo's two practices; SO-SIM-0000 loses its fibre 45 s after it
    // starts (fleet_sim's schedule) and fails over to LTE.
    let fleet = Fleet::start(&cloud, &demo, 6);

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;

    // A wrong password is refused with a visible message.
    browser
        .wait_for_element("#login-form", Duration::from_secs(30))
        .await;
    browser.type_into("#email", &demo.email).await;
    browser.type_into("#password", "wrong password").await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "const e = document.querySelector('#login-error'); return !!e && e.innerText.length > 0",
            "the login error",
            PAGE,
        )
        .await;
    screenshot(&browser, "sign-in").await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser
        .eval("window.__stayopenNoReload = true; return true")
        .await;

    // An MSP admin is offered every part of the dashboard.
    let nav = browser
        .eval("return [...document.querySelectorAll('.nav-link')].map(a => a.dataset.nav)")
        .await;
    assert_eq!(
        nav,
        serde_json::json!([
            "Fleet",
            "Alerts",
            "Policies",
            "Enrolment",
            "Notifications",
            "Reports",
            "Users",
            "API tokens",
            "Audit log"
        ])
    );

    // The overview: totals over the fleet and one row per practice, filled in as appliances enrol.
    browser
        .wait_for(
            "const d = document.querySelector('#fleet-totals [data-stat=online] dd');
             return !!d && d.innerText.trim() === '6'
                 && document.querySelectorAll('.practice-row').length === 2",
            "six online appliances in two practices",
            Duration::from_secs(45),
        )
        .await;
    browser
        .wait_for(
            "return document.querySelector('#live-indicator').dataset.state === 'live'",
            "the live stream",
            PAGE,
        )
        .await;
    let text = browser.text("#fleet").await;
    for practice in &demo.practices {
        assert!(
            text.contains(&practice.name),
            "fleet shows {}",
            practice.name
        );
    }
    assert!(
        browser
            .text("#tenant-name")
            .await
            .contains("Lakeside IT Partners")
    );
    screenshot(&browser, "fleet").await;

    // The cloud filters: no practice is on backup before the first scheduled failover.
    browser.click("[data-filter=on_backup]").await;
    browser
        .wait_for(
            "return document.querySelectorAll('.practice-row').length === 0",
            "no practice on backup yet",
            PAGE,
        )
        .await;
    browser.click("[data-filter=all]").await;

    // A practice: its appliances with their uplinks.
    let practice = &demo.practices[0];
    browser
        .open_fragment(&format!("#/practices/{}", practice.id))
        .await;
    browser
        .wait_for(
            "return document.querySelectorAll('#practice .appliance').length === 3",
            "the practice's three appliances",
            PAGE,
        )
        .await;
    screenshot(&browser, "practice").await;

    // The MSP policy: a value the cloud refuses is pinned to its field; a valid one is previewed,
    // then saved.
    browser.open_fragment("#/policies").await;
    browser
        .wait_for_element("#policy-on_backup_alert_secs", PAGE)
        .await;
    browser.click("#override-on_backup_alert_secs").await;
    browser.type_into("#policy-on_backup_alert_secs", "5").await;
    browser.click("#policy-preview").await;
    browser
        .wait_for(
            "const e = document.querySelector('#error-on_backup_alert_secs');
             return !!e && e.innerText.includes('on_backup_alert_secs')",
            "the cloud's message on the refused field",
            PAGE,
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelector('#policy-save').disabled")
            .await,
        serde_json::json!(true),
        "nothing is saved without a valid preview"
    );
    browser
        .type_into("#policy-on_backup_alert_secs", "600")
        .await;
    browser.click("#policy-preview").await;
    browser
        .wait_for(
            "const p = document.querySelector('#policy-preview-result');
             return !!p && p.dataset.stale === 'false' && p.innerText.includes('600')
                 && !document.querySelector('#policy-save').disabled",
            "the preview of the change",
            PAGE,
        )
        .await;
    browser
        .eval(
            "document.querySelector('#policy-preview-result').dataset.screenshot = ''; return true",
        )
        .await;
    screenshot(&browser, "policies").await;
    browser.click("#policy-save").await;
    browser
        .wait_for(
            "const r = document.querySelector('#layer-revision'); return !!r && r.dataset.revision === '1'",
            "the saved layer",
            PAGE,
        )
        .await;

    // The appliance runs the new policy: the page shows the desired version reported back.
    let appliance = appliance_id(&cloud, &admin_token, "SO-SIM-0000").await;
    let desired = eventually(PAGE, "the new desired version", || async {
        let config = cloud
            .api(&admin_token)
            .appliance_configuration(appliance)
            .await
            .ok();
        config
            .filter(|c| c.effective.policy.on_backup_alert_secs == 600)
            .map(|c| c.desired_version)
    })
    .await;
    let reported_after = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the appliance to report it",
        || async {
            let config = cloud
                .api(&admin_token)
                .appliance_configuration(appliance)
                .await
                .ok();
            config.filter(|c| c.reported_version == Some(desired))
        },
    )
    .await;
    eprintln!("reported after {:?}", reported_after.elapsed());
    browser
        .open_fragment(&format!("#/appliances/{appliance}"))
        .await;
    browser
        .wait_for(
            &format!(
                "const d = document.querySelector('#config-desired');
                 const r = document.querySelector('#config-reported');
                 const s = document.querySelector('#effective-policy [data-setting=on_backup_alert_secs]');
                 return !!d && d.innerText.trim() === '{desired}' && r.innerText.trim() === '{desired}'
                     && document.querySelector('#config-drift').dataset.drift === 'false'
                     && s.textContent.includes('600') && s.textContent.includes('MSP')"
            ),
            "the appliance reporting the desired version",
            Duration::from_secs(20),
        )
        .await;

    // The failover appears on the open page by itself, within seconds, without a reload.
    browser
        .wait_for(
            "const s = document.querySelector('#appliance-state');
             const a = document.querySelector('#active-uplink');
             return !!s && s.dataset.state === 'on_backup' && a.dataset.uplink === 'lte'
                 && window.__stayopenNoReload === true",
            "SO-SIM-0000 on its LTE backup",
            Duration::from_secs(60),
        )
        .await;
    browser
        .wait_for(
            "return !!document.querySelector('#events [data-kind=failover]')
                 && !!document.querySelector('#uplinks tr[data-uplink=lte].active-row')",
            "the failover in the timeline",
            PAGE,
        )
        .await;
    screenshot(&browser, "appliance").await;

    // Planned work on this one appliance, from its page: listed there with its serial.
    browser
        .eval(
            "const local = d => new Date(d.getTime() - d.getTimezoneOffset() * 60000)
                 .toISOString().slice(0, 16);
             const set = (css, value) => {
                 const e = document.querySelector(css);
                 e.value = value;
                 e.dispatchEvent(new Event('input', {bubbles: true}));
             };
             const now = new Date();
             set('#mw-start', local(now));
             set('#mw-end', local(new Date(now.getTime() + 3600 * 1000)));
             return true",
        )
        .await;
    browser.type_into("#mw-reason", "LTE antenna moved").await;
    browser.click("#maintenance-form button[type=submit]").await;
    browser
        .wait_for(
            "const w = document.querySelector('#appliance .window[data-window]');
             return !!w && w.innerText.includes('SO-SIM-0000') && w.innerText.includes('LTE antenna moved')",
            "the appliance's maintenance window",
            PAGE,
        )
        .await;

    // The failover alert: acknowledged from the alerts page.
    browser.open_fragment("#/alerts").await;
    let failover_alert =
        format!("[data-kind=failover][data-state=open] a[href='#/appliances/{appliance}']");
    browser.wait_for_element(&failover_alert, PAGE).await;
    let alert_id = browser
        .eval(&format!(
            "return document.querySelector(\"{failover_alert}\").closest('.alert-item').dataset.alertId"
        ))
        .await;
    let alert_id = alert_id.as_str().expect("alert id").to_owned();
    browser
        .click(&format!("[data-alert-id='{alert_id}'] .acknowledge"))
        .await;
    browser
        .wait_for(
            &format!(
                "const a = document.querySelector(\"[data-alert-id='{alert_id}']\");
                 return !!a && a.dataset.state === 'acknowledged'
                     && a.innerText.includes('Acknowledged by {}')",
                demo.email
            ),
            "the acknowledged alert",
            PAGE,
        )
        .await;
    // A comment: the alert is drawn anew with it, and its comments stay open.
    browser
        .click(&format!(
            "[data-alert-id='{alert_id}'] details.comments summary"
        ))
        .await;
    browser
        .type_into(&format!("#comment-{alert_id}"), "Fibre provider notified")
        .await;
    browser
        .click(&format!(
            "[data-alert-id='{alert_id}'] details.comments button[type=submit]"
        ))
        .await;
    browser
        .wait_for(
            &format!(
                "const d = document.querySelector(\"[data-alert-id='{alert_id}'] details.comments\");
                 return !!d && d.open && d.innerText.includes('Fibre provider notified')
                     && d.querySelector('summary').innerText.includes('(1)')"
            ),
            "the comment, still on show",
            PAGE,
        )
        .await;
    screenshot(&browser, "alerts").await;

    // Enrolment: a token with its QR code and the appliance's configuration.
    browser
        .open_fragment(&format!("#/enrolment/{}", practice.id))
        .await;
    browser.wait_for_element("#create-token", PAGE).await;
    browser.click("#create-token").await;
    browser.wait_for_element("#token-qr path", PAGE).await;
    let command = browser.text("#token-command").await;
    let token = browser.text("#token-value").await;
    assert!(token.starts_with("soe_"), "an enrolment token: {token}");
    assert!(command.contains(&format!("enrollment_token = \"{token}\"")));
    assert!(command.contains(&format!("api_url = \"{}\"", cloud.base_url)));
    screenshot(&browser, "enrolment").await;

    // A compliance officer's practices are edited in place: one more is found by name and added.
    let officer = "officer@riverside.example";
    cloud
        .user_with_role(
            &admin_token,
            officer,
            Role::ComplianceOfficer,
            vec![practice.id],
        )
        .await;
    let second = &demo.practices[1];
    browser.open_fragment("#/users").await;
    let row = format!("#users tr[data-user='{officer}']");
    browser
        .wait_for_element(&format!("{row} .edit-practices"), PAGE)
        .await;
    browser.click(&format!("{row} .edit-practices")).await;
    browser.type_into("#edit-user-practice", &second.name).await;
    let option = format!("{row} .picker-option[data-practice-id='{}']", second.id);
    browser.wait_for_element(&option, PAGE).await;
    browser.click(&option).await;
    browser.click(&format!("{row} .add-practice")).await;
    browser
        .wait_for(
            &format!(
                "return document.querySelectorAll(\"{row} .practices-editor li[data-practice]\").length === 2"
            ),
            "the officer with two practices",
            PAGE,
        )
        .await;
    let edited = cloud.user_by_email(&admin_token, officer).await;
    assert_eq!(edited.practice_ids.len(), 2);
    assert!(edited.practice_ids.contains(&second.id));
    let mut names = vec![practice.name.clone(), second.name.clone()];
    names.sort();
    assert_eq!(
        edited
            .practices
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        names,
        "the user's practices by name"
    );
    browser
        .eval(&format!(
            "document.querySelector(\"{row}\").dataset.screenshot = ''; return true"
        ))
        .await;
    screenshot(&browser, "users").await;

    for (fragment, ready, name) in [
        ("#/notifications", "#channel-list", "notifications"),
        (
            "#/audit",
            "#audit-table tr[data-action='policy.update']",
            "audit",
        ),
        ("#/reports", "#report-table tr[data-practice-id]", "reports"),
    ] {
        browser.open_fragment(fragment).await;
        browser.wait_for_element(ready, PAGE).await;
        screenshot(&browser, name).await;
    }
    assert_eq!(
        browser
            .eval("return window.__stayopenNoReload === true")
            .await,
        serde_json::json!(true),
        "the whole session ran without a reload"
    );

    fleet.stop().await;
    eprintln!("dashboard test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_officer_is_offered_only_their_practice_and_cannot_open_another() {
    require_built_dashboard();
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin_token = cloud.login(&demo.email, &demo.password).await;
    let (mine, other) = (&demo.practices[0], &demo.practices[1]);
    cloud
        .user_with_role(
            &admin_token,
            "officer@smile.example",
            Role::ComplianceOfficer,
            vec![mine.id],
        )
        .await;

    // One appliance in each practice.
    let appliances = Fleet::start(&cloud, &demo, 2);

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, "officer@smile.example", "correct-horse-battery").await;

    let nav = browser
        .eval("return [...document.querySelectorAll('.nav-link')].map(a => a.dataset.nav)")
        .await;
    assert_eq!(nav, serde_json::json!(["Fleet", "Alerts", "Reports"]));
    browser
        .wait_for(
            "return document.querySelectorAll('.practice-row').length === 1",
            "the one practice",
            PAGE,
        )
        .await;
    let fleet = browser.text("#fleet").await;
    assert!(fleet.contains(&mine.name));
    // Their practice, two clicks from signing in.
    browser
        .open_fragment(&format!("#/practices/{}", mine.id))
        .await;
    browser
        .wait_for(
            &format!(
                "const h = document.querySelector('#practice h1');
                 return !!h && h.innerText === {} && document.querySelectorAll('#practice .appliance').length === 1",
                serde_json::json!(mine.name)
            ),
            "their practice",
            PAGE,
        )
        .await;
    screenshot(&browser, "officer-practice").await;
    assert!(
        !fleet.contains(&other.name),
        "another practice is not listed"
    );

    // A deep link to the other practice shows "not found" and nothing of it.
    browser
        .open_fragment(&format!("#/practices/{}", other.id))
        .await;
    browser
        .wait_for(
            "const e = document.querySelector('#practice .not-found'); return !!e && e.innerText.includes('not found')",
            "not found",
            PAGE,
        )
        .await;
    assert!(!browser.text("#practice").await.contains(&other.name));

    // Administration is not offered, even by address.
    browser.open_fragment("#/users").await;
    browser.wait_for_element("#not-found", PAGE).await;
    browser.open_fragment("#/policies").await;
    browser.wait_for_element("#not-found", PAGE).await;

    // Alerts are read-only; reports are theirs.
    browser.open_fragment("#/alerts").await;
    browser
        .wait_for_element("#alerts .last-updated", PAGE)
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('.acknowledge, .resolve').length")
            .await,
        serde_json::json!(0)
    );
    browser.open_fragment("#/reports").await;
    browser
        .wait_for_element("#report-table tr[data-practice-id]", PAGE)
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#report-table tr[data-practice-id]').length")
            .await,
        serde_json::json!(1)
    );
    screenshot(&browser, "officer-reports").await;
    appliances.stop().await;
}
