//! The dashboard in a real browser: headless Chromium against a real cloud, a real database and
//! simulated appliances (the real agent over simulated links) that fail over on a schedule.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{TestCloud, eventually, spawn_cloud, spawn_cloud_with};
use stayopen_cloud::domain::seed::DemoSeed;
use stayopen_shared::api::{Role, TotpCode, TotpSetup, UpdateUser};
use stayopen_shared::ids::ApplianceId;
use stayopen_testkit::fleet_sim::{self, FleetOptions};
use tokio::sync::watch;
use webdriver::Browser;

const PAGE: Duration = Duration::from_secs(15);

/// At most two browser tests at once: each runs a cloud, a simulated fleet on real timers and a
/// Chromium; five at once on two cores delay the fleet's probes until its scripted failovers no
/// longer happen when the tests expect them.
static BROWSER_TESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The dashboard is built, and this test's turn among the browser tests has come: hold the
/// returned permit for the whole test.
async fn require_built_dashboard() -> tokio::sync::SemaphorePermit<'static> {
    let dir = std::env::var_os("STAYOPEN_TEST_STATIC_DIR")
        .map(PathBuf::from)
        .expect("STAYOPEN_TEST_STATIC_DIR must name the built dashboard (frontend/dist); run infra/scripts/test.sh");
    assert!(
        dir.join("index.html").exists(),
        "{} has no index.html; build the frontend first",
        dir.display()
    );
    BROWSER_TESTS
        .acquire()
        .await
        .expect("the semaphore is never closed")
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
    let _turn = require_built_dashboard().await;
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
    assert_eq!(
        browser
            .eval("return document.querySelector('#totp').closest('.field').getBoundingClientRect().height")
            .await,
        serde_json::json!(0),
        "no code field until the cloud asks for one"
    );
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
    let _turn = require_built_dashboard().await;
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
            "Appliances",
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

    // The cloud filters: "on backup" lists exactly the practices its chip counts, each of them on
    // backup (none before SO-SIM-0000's first failure, one during it: a slow run may be in either).
    browser.click("[data-filter=on_backup]").await;
    browser
        .wait_for(
            "const rows = [...document.querySelectorAll('.practice-row')];
             const chip = document.querySelector('[data-filter=on_backup] .chip-count');
             const counted = chip ? Number(chip.innerText.trim()) : 0;
             return document.querySelector('[data-filter=on_backup]').getAttribute('aria-pressed') === 'true'
                 && rows.length === counted
                 && rows.every(r => r.dataset.status === 'on_backup')",
            "only the practices on backup",
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
            // Its fibre fails 45 s after it starts and every 240 s after that: a run slowed past
            // the first failure sees the next one.
            Duration::from_secs(270),
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
        ("#/reports", "#availability-table tr[data-month]", "reports"),
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
    let _turn = require_built_dashboard().await;
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
    assert_eq!(
        nav,
        serde_json::json!(["Fleet", "Appliances", "Alerts", "Reports"])
    );
    browser
        .wait_for(
            "return document.querySelectorAll('.practice-row').length === 1",
            "the one practice",
            PAGE,
        )
        .await;
    let fleet = browser.text("#fleet").await;
    assert!(fleet.contains(&mine.name));
    // While they read the fleet, the page modules they may open arrive in the background; the
    // administration pages', which they may not open, never does.
    assert_prefetched(
        &browser,
        &["appliance_pages", "alert_pages", "report_pages"],
        &["administration_pages"],
    )
    .await;
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
        .wait_for_element("#availability-table tr[data-month]", PAGE)
        .await;
    assert_eq!(
        browser
            .eval("return [...document.querySelectorAll('#report-practice option')].map(o => o.innerText)")
            .await,
        serde_json::json!([mine.name]),
        "only their practice is offered"
    );
    screenshot(&browser, "officer-reports").await;
    appliances.stop().await;
}

/// The first and last day of the month before `today`'s.
fn last_month(today: chrono::NaiveDate) -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::Datelike;
    let first_of_this = today.with_day(1).expect("first of the month");
    let last = first_of_this.pred_opt().expect("the day before");
    (last.with_day(1).expect("first of last month"), last)
}

/// A test device of a practice that reports by hand over MQTT, as a real appliance does.
struct Reporter {
    id: ApplianceId,
    connection: common::DeviceConnection,
}

impl Reporter {
    async fn publish(&self, channel: stayopen_shared::topics::Channel, payload: Vec<u8>) {
        self.connection
            .client
            .publish(
                stayopen_shared::topics::DeviceTopic::new(self.id, channel).to_string(),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish");
    }

    /// One event, sent at `at`; waits until the cloud has stored it, so the next one is handled
    /// after it (a drill's start before its end).
    async fn event(
        &self,
        cloud: &TestCloud,
        at: chrono::DateTime<chrono::Utc>,
        event: stayopen_shared::events::ApplianceEvent,
    ) {
        let before = common::events::stored(&cloud.owner_pool, self.id.0)
            .await
            .len();
        let message = stayopen_shared::MessageId(uuid::Uuid::new_v4());
        self.publish(
            stayopen_shared::topics::Channel::Events,
            stayopen_shared::Envelope::new(message, self.id, at, event).encode(),
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "the event to be stored",
            || async {
                (common::events::stored(&cloud.owner_pool, self.id.0)
                    .await
                    .len()
                    > before)
                    .then_some(())
            },
        )
        .await;
    }

    /// A telemetry message covering the hour starting at `hour`, with `active` carrying traffic
    /// and what the critical applications answered through it.
    async fn hour(
        &self,
        hour: chrono::DateTime<chrono::Utc>,
        active: &str,
        apps: Vec<stayopen_shared::compliance::AppReachability>,
    ) {
        let mut body = common::telemetry(self.id)
            .fibre_and_lte(active)
            .body()
            .clone();
        // One rolled-up message per hour: the cloud counts 10 s per sample and caps an hour at
        // 3600 s.
        body.samples = Some(360);
        body.apps = apps;
        let message = stayopen_shared::MessageId(uuid::Uuid::new_v4());
        self.publish(
            stayopen_shared::topics::Channel::Telemetry,
            stayopen_shared::Envelope::new(
                message,
                self.id,
                hour + chrono::Duration::minutes(59),
                body,
            )
            .encode(),
        )
        .await;
    }
}

fn reach(app: &str, uplink: &str, reachable: bool) -> stayopen_shared::compliance::AppReachability {
    stayopen_shared::compliance::AppReachability {
        app: app.into(),
        uplink: uplink.into(),
        reachable,
        latency_ms: reachable.then_some(if uplink == "lte" { 63.0 } else { 18.0 }),
        age_secs: 20,
        reason: (!reachable).then(|| "tcp lab.example.com:2575: connection refused".into()),
    }
}

fn drill_event(
    kind: stayopen_shared::events::EventKind,
    reason: &str,
    report: Option<stayopen_shared::compliance::DrillReport>,
) -> stayopen_shared::events::ApplianceEvent {
    stayopen_shared::events::ApplianceEvent {
        kind,
        uplink: None,
        from: Some("fiber".into()),
        to: Some("lte".into()),
        reason: reason.into(),
        drill: report,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_officer_signs_off_a_drill_and_downloads_last_months_package_which_verify_accepts_until_one_byte_changes()
 {
    use chrono::{Duration as Span, TimeZone, Utc};
    use stayopen_shared::api::CreateUser;
    use stayopen_shared::compliance::{
        AppCheckResult, AppEndpoint, AppTier, CriticalAppInput, DrillRecord, DrillReport,
        EvidencePackage, EvidencePublicKey, Incident,
    };
    use stayopen_shared::events::{ApplianceEvent, EventKind};

    let _turn = require_built_dashboard().await;
    let started = Instant::now();
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin_token = cloud.login(&demo.email, &demo.password).await;
    let admin = cloud.api(&admin_token);
    let practice = &demo.practices[0];
    admin
        .create_user(&CreateUser {
            email: "olivia@smile.example".into(),
            display_name: "Olivia Officer".into(),
            password: "correct-horse-battery".into(),
            role: Role::ComplianceOfficer,
            practice_ids: vec![practice.id],
            access_expires_at: None,
        })
        .await
        .expect("create the officer");
    let officer_token = cloud
        .login("olivia@smile.example", "correct-horse-battery")
        .await;
    let officer = cloud.api(&officer_token);

    // The MSP registers two critical applications.
    for (name, tier, endpoint) in [
        (
            "EHR",
            AppTier::Tier1,
            AppEndpoint::Https {
                url: "https://ehr.example.com/health".into(),
            },
        ),
        (
            "Lab interface",
            AppTier::Tier2,
            AppEndpoint::Tcp {
                host: "lab.example.com".into(),
                port: 2575,
            },
        ),
    ] {
        let (status, _) = admin
            .post::<_, serde_json::Value>(
                &format!("/api/v1/practices/{}/critical-apps", practice.id),
                &CriticalAppInput {
                    name: name.into(),
                    tier,
                    endpoints: vec![endpoint],
                    owner: "Front desk".into(),
                    note: String::new(),
                },
            )
            .await;
        assert_eq!(status, 201, "register {name}");
    }

    // A device of the practice reports last month hour by hour, with two days of silence (a gap)
    // and a morning on the LTE backup (an incident); it drills twice.
    let device = cloud
        .enrol_device(
            &practice.enrollment_token,
            "SO-EVIDENCE-1",
            "02:53:4f:00:0e:01",
        )
        .await;
    let reporter = Reporter {
        id: device.enrolled.appliance_id,
        connection: cloud.connect_device(&device).await.expect("connect"),
    };
    let now = Utc::now();
    let (first, last) = last_month(now.date_naive());
    let day = |n: i64, hour: u32| {
        Utc.from_utc_datetime(&first.and_hms_opt(hour, 0, 0).expect("time")) + Span::days(n)
    };
    let silent = day(11, 0)..day(13, 0);
    let outage = day(19, 9)..day(19, 12);
    let mut hour = day(0, 0);
    let mut sent = 0;
    while hour + Span::hours(1) <= now {
        if outage.contains(&hour) && hour == outage.start {
            reporter
                .event(
                    &cloud,
                    hour + Span::seconds(5),
                    ApplianceEvent {
                        kind: EventKind::Failover,
                        uplink: Some("fiber".into()),
                        from: Some("fiber".into()),
                        to: Some("lte".into()),
                        reason: "fiber: 3 of 3 probe targets silent for 3 s".into(),
                        drill: None,
                    },
                )
                .await;
        }
        if hour == outage.end {
            reporter
                .event(
                    &cloud,
                    hour + Span::seconds(10),
                    ApplianceEvent {
                        kind: EventKind::Failback,
                        uplink: Some("fiber".into()),
                        from: Some("lte".into()),
                        to: Some("fiber".into()),
                        reason: "fiber clean for 60 s".into(),
                        drill: None,
                    },
                )
                .await;
        }
        if !silent.contains(&hour) {
            let on_backup = outage.contains(&hour);
            let active = if on_backup { "lte" } else { "fiber" };
            // The appliance checks the applications through the standby too, within its budget.
            let mut apps = vec![
                reach("EHR", "lte", true),
                reach("Lab interface", "lte", !on_backup),
            ];
            if !on_backup {
                apps.splice(
                    0..0,
                    [
                        reach("EHR", "fiber", true),
                        reach("Lab interface", "fiber", true),
                    ],
                );
            }
            reporter.hour(hour, active, apps).await;
            sent += 1;
        }
        hour += Span::hours(1);
    }
    // Drills: one passes, one finds the lab interface unreachable through the backup.
    let report = |passed: bool| DrillReport {
        command_id: None,
        backup: Some("lte".into()),
        switchover_ms: Some(if passed { 850 } else { 1_240 }),
        failback_ms: Some(420),
        apps: vec![
            AppCheckResult {
                app: "EHR".into(),
                reachable: true,
                latency_ms: Some(61.0),
                reason: None,
            },
            AppCheckResult {
                app: "Lab interface".into(),
                reachable: passed,
                latency_ms: passed.then_some(70.0),
                reason: (!passed).then(|| "tcp lab.example.com:2575: connection refused".into()),
            },
        ],
        passed,
    };
    for (start, passed) in [(day(4, 2), true), (day(24, 2), false)] {
        reporter
            .event(
                &cloud,
                start,
                drill_event(EventKind::DrillStarted, "drill: traffic moves to lte", None),
            )
            .await;
        reporter
            .event(
                &cloud,
                start + Span::seconds(125),
                drill_event(
                    EventKind::DrillFinished,
                    if passed {
                        "drill passed: traffic ran on lte for 120 s"
                    } else {
                        "drill finished: an application was unreachable through lte"
                    },
                    Some(report(passed)),
                ),
            )
            .await;
    }
    let drills: Vec<DrillRecord> = eventually(Duration::from_secs(30), "two drills", || async {
        let (_, page) = officer
            .get::<stayopen_shared::api::Page<DrillRecord>>(&format!(
                "/api/v1/drills?practice_id={}&awaiting_sign_off=true",
                practice.id
            ))
            .await;
        page.map(|p| p.items).filter(|d| d.len() == 2)
    })
    .await;
    let passed = drills
        .iter()
        .find(|d| d.reason.contains("passed"))
        .expect("the passed drill")
        .id;
    // The incident, with the MSP's root cause and a comment.
    let incident: Incident = eventually(Duration::from_secs(30), "the incident", || async {
        let (_, page) = officer
            .get::<stayopen_shared::api::Page<Incident>>(&format!(
                "/api/v1/incidents?practice_id={}",
                practice.id
            ))
            .await;
        page.and_then(|p| p.items.into_iter().find(|i| i.ended_at.is_some()))
    })
    .await;
    let (status, _) = admin
        .patch::<_, serde_json::Value>(
            &format!("/api/v1/incidents/{}", incident.id),
            &stayopen_shared::compliance::UpdateIncident {
                root_cause: "Fibre cut by road works on Main St; the carrier spliced it by noon."
                    .into(),
            },
        )
        .await;
    assert_eq!(status, 200, "root cause");
    let (status, _) = admin
        .post::<_, serde_json::Value>(
            &format!("/api/v1/incidents/{}/comments", incident.id),
            &stayopen_shared::compliance::AddIncidentComment {
                body: "Carrier ticket 48213 closed.".into(),
            },
        )
        .await;
    assert_eq!(status, 201, "comment");
    eprintln!(
        "{sent} hours of telemetry and the events reported after {:?}",
        started.elapsed()
    );

    // The officer signs in: the drills awaiting sign-off are counted on the Reports page.
    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, "olivia@smile.example", "correct-horse-battery").await;
    browser.open_fragment("#/reports").await;
    browser
        .wait_for_element("#awaiting-sign-off[data-count='2']", PAGE)
        .await;
    let last_key = format!("{}", first.format("%Y-%m"));
    browser
        .wait_for_element(
            &format!("#availability-table tr[data-month='{last_key}']"),
            PAGE,
        )
        .await;
    // Last month: up most of the time, the silent days a labelled gap, never up.
    let gap = browser
        .text(&format!(
            "#availability-table tr[data-month='{last_key}'] .gap"
        ))
        .await;
    assert!(gap.contains("no data for"), "{gap}");
    assert_eq!(
        browser
            .eval(&format!(
                "return document.querySelectorAll('#availability-months .bar-group[data-period=\"{last_key}\"] .gap-label').length"
            ))
            .await,
        serde_json::json!(1),
        "the month's gap is labelled on the chart"
    );
    browser
        .eval(&format!(
            "const s = document.querySelector('#availability-month');
             s.value = '{last_key}'; s.dispatchEvent(new Event('change')); return true"
        ))
        .await;
    let silent_day = first + chrono::Days::new(11);
    browser
        .wait_for(
            &format!(
                "const g = document.querySelector('#availability-days-chart .bar-group[data-period=\"{silent_day}\"]');
                 return !!g && g.dataset.gapSecs === '86400' && !!g.querySelector('.gap-label')"
            ),
            "the silent day drawn as a labelled gap",
            PAGE,
        )
        .await;
    screenshot(&browser, "reports-availability").await;

    // Drills: no "run a drill" for an officer; the passed drill is signed off with a comment.
    browser.click("#tab-drills").await;
    let card = format!("#drill-list li[data-drill-id='{passed}']");
    browser
        .wait_for_element(&format!("{card} .sign-off-button"), PAGE)
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#run-drill').length")
            .await,
        serde_json::json!(0)
    );
    assert!(browser.text(&card).await.contains("850 ms"));
    browser
        .type_into(
            &format!("#sign-off-comment-{passed}"),
            "Reviewed with the office manager: switchover under a second.",
        )
        .await;
    browser.click(&format!("{card} .sign-off-button")).await;
    browser
        .wait_for_element(&format!("{card} .confirm-sign-off"), PAGE)
        .await;
    browser.click(&format!("{card} .confirm-sign-off")).await;
    browser
        .wait_for(
            &format!(
                "const s = document.querySelector(\"{card} .sign-off.signed\");
                 return !!s && s.innerText.includes('Olivia Officer') && !!s.querySelector('.sign-off-time time')"
            ),
            "the sign-off with the officer's name and the time",
            PAGE,
        )
        .await;
    browser
        .wait_for_element("#awaiting-sign-off[data-count='1']", PAGE)
        .await;
    let (_, signed) = officer
        .get::<DrillRecord>(&format!("/api/v1/drills/{passed}"))
        .await;
    let sign_off = signed.and_then(|d| d.sign_off).expect("signed off");
    assert_eq!(sign_off.name, "Olivia Officer");
    assert!(sign_off.comment.contains("switchover under a second"));
    browser
        .eval(&format!(
            "document.querySelector(\"{card}\").setAttribute('data-screenshot', ''); return true"
        ))
        .await;
    screenshot(&browser, "reports-drills").await;

    // Incidents: read-only for the officer, with the MSP's root cause and comment.
    browser.click("#tab-incidents").await;
    let card = format!("#incident-list li[data-incident-id='{}']", incident.id);
    browser.wait_for_element(&card, PAGE).await;
    let text = browser.text(&card).await;
    assert!(text.contains("Fibre cut by road works"), "{text}");
    assert!(text.contains("Carrier ticket 48213 closed."), "{text}");
    assert!(text.contains("3 h"), "three hours on backup: {text}");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('.root-cause-input, .comment-input').length")
            .await,
        serde_json::json!(0)
    );
    screenshot(&browser, "reports-incidents").await;

    // The register: the officer adds an application; the server's refusal of a duplicate is
    // shown next to the form.
    browser.click("#tab-register").await;
    browser
        .wait_for_element("#register-table tr[data-app-name='EHR']", PAGE)
        .await;
    browser.click("#register-add").await;
    browser.wait_for_element("#register-form", PAGE).await;
    browser.type_into("#app-name", "ehr").await;
    browser
        .type_into("#app-endpoint-0", "https://ehr2.example.com/")
        .await;
    browser.click("#app-save").await;
    browser
        .wait_for(
            "const e = document.querySelector('#register-error .notice-error'); return !!e && e.innerText.length > 0",
            "the server's refusal next to the form",
            PAGE,
        )
        .await;
    browser
        .eval(
            "const i = document.querySelector('#app-name');
             i.value = ''; i.dispatchEvent(new Event('input')); return true",
        )
        .await;
    browser.type_into("#app-name", "e-Prescribing").await;
    browser
        .eval(
            "const s = document.querySelector('#app-endpoint-kind-0');
             s.value = 'dns'; s.dispatchEvent(new Event('change'));
             const i = document.querySelector('#app-endpoint-0');
             i.value = ''; i.dispatchEvent(new Event('input')); return true",
        )
        .await;
    browser
        .type_into("#app-endpoint-0", "erx.example.com")
        .await;
    browser.type_into("#app-owner", "Office manager").await;
    browser.click("#app-save").await;
    browser
        .wait_for_element("#register-table tr[data-app-name='e-Prescribing']", PAGE)
        .await;
    screenshot(&browser, "reports-register").await;

    // The appliance page shows each application's latest check through each uplink.
    browser
        .open_fragment(&format!("#/appliances/{}", reporter.id))
        .await;
    browser
        .wait_for_element(
            "#app-reachability tr[data-app='Lab interface'] td[data-uplink='lte'][data-reachable='true']",
            PAGE,
        )
        .await;
    assert_eq!(
        browser
            .eval("return [...document.querySelectorAll('#app-reachability thead th')].map(t => t.textContent)")
            .await,
        serde_json::json!(["Application", "fiber", "lte"]),
        "a column per uplink, the primary first"
    );
    browser
        .eval("document.querySelector('#appliance-apps').setAttribute('data-screenshot', ''); return true")
        .await;
    screenshot(&browser, "appliance-apps").await;
    browser.open_fragment("#/reports").await;
    browser.wait_for_element("#tab-packages", PAGE).await;

    // Evidence: the officer requests last month's package on the page and waits for it.
    browser.click("#tab-packages").await;
    browser.wait_for_element("#package-request", PAGE).await;
    browser.click("#package-request").await;
    let row = format!("#package-table tr[data-period='month'][data-from='{first}']");
    browser
        .wait_for_element(
            &format!("{row}[data-state='ready'] .package-download"),
            Duration::from_secs(90),
        )
        .await;
    let (_, key) = officer
        .get::<EvidencePublicKey>("/api/v1/evidence/public-key")
        .await;
    let key = key.expect("the public key");
    browser
        .wait_for(
            &format!(
                "const f = document.querySelector('#public-key-fingerprint'); return !!f && f.innerText === {}",
                serde_json::json!(key.fingerprint)
            ),
            "the key's fingerprint",
            PAGE,
        )
        .await;
    assert!(
        browser
            .text("#verify-command")
            .await
            .contains("stayopen-cloud evidence verify FILE.zip --public-key stayopen-evidence.pem")
    );
    screenshot(&browser, "reports-packages").await;

    // Downloaded through the page's button with the browser's session.
    let file_name = browser
        .eval(&format!(
            "return document.querySelector(\"{row} .package-download\").dataset.fileName"
        ))
        .await
        .as_str()
        .expect("file name")
        .to_owned();
    browser.click(&format!("{row} .package-download")).await;
    let downloaded = browser.download_dir().join(&file_name);
    let zip = eventually(Duration::from_secs(30), "the downloaded zip", || async {
        std::fs::read(&downloaded).ok().filter(|b| !b.is_empty())
    })
    .await;
    let (_, packages) = officer
        .get::<stayopen_shared::api::Page<EvidencePackage>>(&format!(
            "/api/v1/evidence/packages?practice_id={}",
            practice.id
        ))
        .await;
    let package = packages
        .and_then(|p| {
            p.items
                .into_iter()
                .find(|p| p.from == first && p.to == last)
        })
        .expect("last month's package");
    use sha2::Digest;
    assert_eq!(
        Some(hex::encode(sha2::Sha256::digest(&zip))),
        package.sha256,
        "the file saved is the package listed"
    );

    // `evidence verify` accepts it with the published key, and names a changed byte.
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("stayopen-evidence.pem");
    std::fs::write(&pem, &key.public_key_pem).expect("pem");
    let verify = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
            .args(["evidence", "verify"])
            .arg(file)
            .arg("--public-key")
            .arg(&pem)
            .output()
            .expect("run stayopen-cloud evidence verify")
    };
    let accepted = verify(&downloaded);
    assert!(
        accepted.status.success(),
        "verify accepts the package: {}{}",
        String::from_utf8_lossy(&accepted.stdout),
        String::from_utf8_lossy(&accepted.stderr)
    );
    let mut changed = zip.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    let tampered = dir.path().join("tampered.zip");
    std::fs::write(&tampered, &changed).expect("tampered copy");
    let refused = verify(&tampered);
    assert!(
        !refused.status.success(),
        "verify refuses a package with one byte changed: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    eprintln!(
        "verify refused the changed copy: {}{}",
        String::from_utf8_lossy(&refused.stdout).trim(),
        String::from_utf8_lossy(&refused.stderr).trim()
    );

    // An auditor of the practice reads the same evidence, with none of the controls.
    admin
        .create_user(&CreateUser {
            email: "audrey@auditors.example".into(),
            display_name: "Audrey Auditor".into(),
            password: "correct-horse-battery".into(),
            role: Role::Auditor,
            practice_ids: vec![practice.id],
            access_expires_at: Some(Utc::now() + Span::days(7)),
        })
        .await
        .expect("create the auditor");
    browser.click("#sign-out").await;
    sign_in(&browser, "audrey@auditors.example", "correct-horse-battery").await;
    browser.open_fragment("#/reports").await;
    browser.wait_for_element("#tab-drills", PAGE).await;
    browser.click("#tab-drills").await;
    browser
        .wait_for_element(
            &format!("#drill-list li[data-drill-id='{passed}'] .sign-off.signed"),
            PAGE,
        )
        .await;
    browser.click("#tab-register").await;
    browser
        .wait_for_element("#register-table tr[data-app-name='e-Prescribing']", PAGE)
        .await;
    browser.click("#tab-packages").await;
    browser
        .wait_for_element(
            &format!("{row}[data-state='ready'] .package-download"),
            PAGE,
        )
        .await;
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('#package-request, #register-add, .edit-app, .delete-app, .sign-off-button, #run-drill').length"
            )
            .await,
        serde_json::json!(0),
        "an auditor is offered no control"
    );
    eprintln!("evidence dashboard test took {:?}", started.elapsed());
}

/// The dashboard under its Content-Security-Policy (issue 15): it boots (its start-up script is a
/// file, not inline), signs in, opens the live stream with a ticket and renders every page of an
/// MSP admin without one violation reported; an injected inline script is blocked and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_under_its_content_security_policy_and_an_injected_inline_script_does_not_run()
 {
    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    // The app rendered the sign-in form: its wasm and start-up script ran under the policy.
    browser
        .wait_for_element("#login-form", Duration::from_secs(30))
        .await;
    browser
        .eval(
            "window.__cspViolations = [];
             document.addEventListener('securitypolicyviolation', e =>
                 window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
             return true",
        )
        .await;

    // The attack: script injected into the page does not run, and the browser reports it.
    browser
        .eval(
            "const s = document.createElement('script');
             s.textContent = 'window.__injectedRan = true';
             document.body.appendChild(s);
             return true",
        )
        .await;
    browser
        .wait_for(
            "return window.__cspViolations.some(v => v.startsWith('script-src'))",
            "the injected script reported as a violation",
            PAGE,
        )
        .await;
    assert_eq!(
        browser.eval("return window.__injectedRan === true").await,
        serde_json::json!(false),
        "an inline script ran"
    );
    browser
        .eval("window.__cspViolations = []; return true")
        .await;

    sign_in(&browser, &demo.email, &demo.password).await;
    browser
        .wait_for(
            "return document.querySelector('#live-indicator').dataset.state === 'live'",
            "the live stream, opened with a ticket",
            PAGE,
        )
        .await;
    // Before any other page is opened, every page module an MSP admin may open has arrived.
    assert_prefetched(
        &browser,
        &[
            "appliance_pages",
            "alert_pages",
            "report_pages",
            "administration_pages",
        ],
        &[],
    )
    .await;
    let sections = [
        "Alerts",
        "Policies",
        "Enrolment",
        "Notifications",
        "Reports",
        "Users",
        "API tokens",
        "Audit log",
        "Fleet",
    ];
    for section in sections {
        browser
            .click(&format!(".nav-link[data-nav='{section}']"))
            .await;
        browser
            .wait_for(
                &format!(
                    "const a = document.querySelector('.nav-link.active');
                     return !!a && a.dataset.nav === '{section}'
                         && document.querySelector('#main').innerText.trim().length > 0"
                ),
                &format!("the {section} page"),
                PAGE,
            )
            .await;
    }
    // Signed in through every page, still live, with nothing blocked.
    browser
        .wait_for(
            "return document.querySelector('#live-indicator').dataset.state === 'live'",
            "the live stream after visiting every page",
            PAGE,
        )
        .await;
    assert_eq!(
        browser.eval("return window.__cspViolations").await,
        serde_json::json!([]),
        "the dashboard broke its own Content-Security-Policy"
    );
}

/// The dashboard opens on its main module alone: every page but the fleet is a module of its own
/// (frontend/src/pages/mod.rs), fetched when first needed. The attack is the network: with the page
/// modules unreachable the fleet still opens and works, a page whose module cannot be fetched says
/// so with a way to try again, and once the network is back the same page opens without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_opens_on_its_main_module_alone_and_a_page_whose_module_cannot_be_fetched_says_so_and_opens_when_tried_again()
 {
    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let browser = Browser::start().await;
    let page_modules = ["*/split_*.wasm", "*/chunk_*.wasm"];
    browser.block_urls(&page_modules).await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    // The fleet page, with its totals and both demo practices, from the main module.
    browser
        .wait_for(
            "return !!document.querySelector('#fleet-totals')
                 && document.querySelectorAll('.practice-row').length === 2",
            "the fleet page with the page modules unreachable",
            PAGE,
        )
        .await;
    let fetched = browser.fetched_files().await;
    assert!(
        fetched.iter().any(|f| f == "stayopen_frontend_bg.wasm"),
        "the main module was fetched: {fetched:?}"
    );
    // It came compressed: fewer bytes on the wire than in the module.
    let sizes = browser
        .eval(
            "const e = performance.getEntriesByType('resource')
                 .find(e => e.name.endsWith('/stayopen_frontend_bg.wasm'));
             return [e.encodedBodySize, e.decodedBodySize]",
        )
        .await;
    let (sent, size) = (sizes[0].as_u64(), sizes[1].as_u64());
    assert!(
        matches!((sent, size), (Some(sent), Some(size)) if sent > 0 && sent * 2 < size),
        "the main module went out uncompressed: {sizes}"
    );

    // Another page: its module cannot be fetched, and the page says so instead of staying blank.
    browser.open_fragment("#/alerts").await;
    browser.wait_for_element("#page-not-downloaded", PAGE).await;
    let notice = browser.text("#page-not-downloaded").await;
    assert!(
        notice.contains("This page could not be downloaded")
            && notice.contains("try again")
            && notice.contains("Reload the dashboard"),
        "{notice}"
    );
    assert_eq!(
        browser
            .eval("return !!document.querySelector('#alerts')")
            .await,
        serde_json::json!(false),
        "the alerts page showed without its module"
    );
    // The top bar and the navigation still work: the fleet comes back.
    browser.click(".nav-link[data-nav='Fleet']").await;
    browser.wait_for_element("#fleet-totals", PAGE).await;

    // The network is back: "Try again" opens the page, without reloading the app.
    browser.open_fragment("#/alerts").await;
    browser.wait_for_element("#page-not-downloaded", PAGE).await;
    browser
        .eval("window.__sameDocument = true; return true")
        .await;
    browser.block_urls(&[]).await;
    browser.click("#page-try-again").await;
    browser.wait_for_element("#alerts", PAGE).await;
    assert_eq!(
        browser.text("#page-not-downloaded").await,
        "",
        "the notice stays after the page opened"
    );
    // A page of another module (a practice) opens too, in the same document all along.
    let practice = &demo.practices[0];
    browser
        .open_fragment(&format!("#/practices/{}", practice.id))
        .await;
    browser
        .wait_for(
            &format!(
                "const p = document.querySelector('#practice h1');
                 return !!p && p.innerText.includes({})",
                serde_json::json!(practice.name)
            ),
            "the practice page",
            PAGE,
        )
        .await;
    assert_eq!(
        browser.eval("return window.__sameDocument === true").await,
        serde_json::json!(true),
        "the app reloaded"
    );
    let fetched = browser.fetched_files().await;
    for module in ["split_alert_pages.wasm", "split_appliance_pages.wasm"] {
        assert!(
            fetched.iter().any(|f| f == module),
            "{module} was fetched: {fetched:?}"
        );
    }
}

/// Once signed in, the browser fetches the page modules named in `fetched` (`split_<name>.wasm`)
/// in the background, without a page of theirs being opened, and never those in `not_fetched`.
async fn assert_prefetched(browser: &Browser, fetched: &[&str], not_fetched: &[&str]) {
    let files = |names: &[&str]| {
        serde_json::json!(
            names
                .iter()
                .map(|n| format!("split_{n}.wasm"))
                .collect::<Vec<_>>()
        )
    };
    browser
        .wait_for(
            &format!(
                "const r = performance.getEntriesByType('resource')
                     .map(e => new URL(e.name).pathname.split('/').pop());
                 return {}.every(m => r.includes(m))",
                files(fetched)
            ),
            "the page modules fetched in the background",
            PAGE,
        )
        .await;
    // The fetches run one after another, the administration pages' last: a moment after the
    // others it would have started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = browser.fetched_files().await;
    for file in files(not_fetched).as_array().into_iter().flatten() {
        assert!(
            !all.iter().any(|f| Some(f.as_str()) == file.as_str()),
            "{file} was fetched: {all:?}"
        );
    }
    assert_eq!(
        browser
            .eval("return ['', '#/', '#/fleet'].includes(location.hash)")
            .await,
        serde_json::json!(true),
        "still on the fleet page"
    );
}

/// Copies the built dashboard into a folder of the test's own, which it may change.
fn copy_dashboard(to: &std::path::Path) {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("create a folder");
        for entry in std::fs::read_dir(from).expect("read the dashboard") {
            let entry = entry.expect("a file");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("its type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copy a file");
            }
        }
    }
    let built = std::env::var_os("STAYOPEN_TEST_STATIC_DIR").expect("the built dashboard");
    copy(std::path::Path::new(&built), to);
}

/// A new build is deployed while a tab is open: the tab must not fetch the new build's page modules
/// into its old main module (their functions would not line up). Each build's code lives in a
/// folder named after its content, which `boot.js` names; the old tab, its folder gone, says the
/// page could not be downloaded, and "Reload the dashboard" opens the page from the new build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_open_across_a_deployment_never_mixes_builds_and_reloading_opens_the_new_one() {
    let _turn = require_built_dashboard().await;
    let site = tempfile::tempdir().expect("the site's folder");
    copy_dashboard(site.path());
    let dir = site.path().to_owned();
    let cloud = spawn_cloud_with(move |config| config.http.static_dir = Some(dir)).await;
    let demo = cloud.seed_demo().await;
    let browser = Browser::start().await;
    // Until the deployment, the page modules do not arrive (the tab has only its main module).
    browser
        .block_urls(&["*/split_*.wasm", "*/chunk_*.wasm"])
        .await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser.wait_for_element("#fleet-totals", PAGE).await;

    // The deployment: the build's folder is replaced by the next one's, and boot.js and index.html
    // name the new folder.
    let old = std::fs::read_dir(site.path())
        .expect("the site")
        .map(|e| {
            e.expect("a file")
                .file_name()
                .into_string()
                .expect("a name")
        })
        .find(|name| name.starts_with("app-"))
        .expect("the build's folder, app-<hash>");
    let new = "app-0123456789abcdef";
    std::fs::rename(site.path().join(&old), site.path().join(new)).expect("deploy");
    for file in ["boot.js", "index.html"] {
        let path = site.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(&old), "{file} names the build's folder");
        std::fs::write(&path, text.replace(&old, new)).expect("write");
    }
    browser.block_urls(&[]).await;

    // The old tab asks its own build's folder, which is gone.
    browser.open_fragment("#/alerts").await;
    browser.wait_for_element("#page-not-downloaded", PAGE).await;
    let fetched = browser.fetched_files().await;
    let asked_new = browser
        .eval(&format!(
            "return performance.getEntriesByType('resource').some(e => e.name.includes('/{new}/'))"
        ))
        .await;
    assert_eq!(
        asked_new,
        serde_json::json!(false),
        "the old tab fetched the new build's files: {fetched:?}"
    );
    // Reloading loads the new build, still signed in, on the page that was asked for.
    browser.click("#page-reload").await;
    browser.wait_for_element("#alerts", PAGE).await;
    let from_new = browser
        .eval(&format!(
            "const r = performance.getEntriesByType('resource');
             return r.some(e => e.name.endsWith('/{new}/stayopen_frontend_bg.wasm'))
                 && r.some(e => e.name.endsWith('/{new}/split_alert_pages.wasm'))"
        ))
        .await;
    assert_eq!(
        from_new,
        serde_json::json!(true),
        "the reloaded tab runs the new build: {:?}",
        browser.fetched_files().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_page_shows_the_tunnel_its_relay_and_redundant_data_and_says_when_it_fell_back()
 {
    use stayopen_shared::topics::{Channel, DeviceTopic};
    use stayopen_shared::tunnel::{TunnelMode, TunnelReport, TunnelState};

    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    // The operator runs a relay; the appliance registers its WireGuard key at enrolment.
    stayopen_cloud::domain::relays::create(
        &cloud.pool,
        "relay-eu-1",
        "192.0.2.10:51820",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
    )
    .await
    .expect("relay registered");
    let (key_pem, csr_pem) =
        stayopen_appliance::identity::new_key_and_request().expect("key and request");
    let enrolled = cloud
        .anonymous()
        .enroll(&stayopen_shared::api::EnrollRequest {
            token: demo.practices[0].enrollment_token.clone(),
            hardware: stayopen_shared::api::HardwareIdentity {
                serial: "SO-TUNNEL-1".into(),
                mac: "02:53:4f:00:16:01".into(),
                model: "test".into(),
            },
            agent_version: "test".into(),
            csr_pem,
            wireguard_public_key: Some("gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdEBGNbkk=".into()),
        })
        .await
        .expect("enrolled");
    let device = common::Device { enrolled, key_pem };
    let id = device.enrolled.appliance_id;
    let inner_address = cloud
        .api(&admin)
        .appliance_configuration(id)
        .await
        .expect("configuration")
        .effective
        .policy
        .tunnel_relay
        .expect("a relay assigned")
        .inner_address;
    let connection = cloud.connect_device(&device).await.expect("connect");
    let publish = |report: TunnelReport| {
        let payload = common::telemetry(id)
            .fibre_and_lte("fiber")
            .tunnel(report)
            .encode();
        let client = connection.client.clone();
        async move {
            client
                .publish(
                    DeviceTopic::new(id, Channel::Telemetry).to_string(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .expect("publish");
        }
    };
    let up = TunnelReport {
        mode: TunnelMode::Critical,
        state: TunnelState::Up,
        relay: Some("relay-eu-1".into()),
        last_handshake_secs: Some(12),
        redundant: true,
        // lte is the metered backup: 1.5 GB of the default 2048 MB cap.
        redundant_bytes: [
            ("fiber".to_owned(), 2_000_000),
            ("lte".to_owned(), 1_500_000_000),
        ]
        .into(),
        tunnel_bytes: 42_000_000,
    };
    publish(up.clone()).await;
    eventually(PAGE, "the tunnel report stored", || async {
        cloud.api(&admin).appliance(id).await.ok()?.tunnel
    })
    .await;

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser.open_fragment(&format!("#/appliances/{id}")).await;
    browser
        .wait_for(
            "return document.querySelector('#tunnel')?.dataset.state === 'up'",
            "the tunnel panel, up",
            PAGE,
        )
        .await;
    assert_eq!(browser.text("#tunnel h2").await, "Session-safe tunnel");
    assert_eq!(browser.text("#tunnel-state").await, "Up");
    assert_eq!(browser.text("#tunnel-relay").await, "relay-eu-1");
    assert_eq!(
        browser.text("#tunnel-mode").await,
        "Critical applications and telemedicine"
    );
    assert_eq!(browser.text("#tunnel-handshake").await, "12 s ago");
    browser
        .wait_for(
            &format!(
                "return document.querySelector('#tunnel-address')?.textContent === '{inner_address}'"
            ),
            "the inner address the cloud assigned",
            PAGE,
        )
        .await;
    assert_eq!(browser.text("#tunnel-bytes").await, "42.0 MB");
    assert_eq!(
        browser
            .text("#tunnel-redundant-use tr[data-uplink='lte'] td")
            .await,
        "1.5 GB of 2048 MB cap (73 %)"
    );
    assert_eq!(
        browser
            .text("#tunnel-redundant-use tr[data-uplink='fiber'] td")
            .await,
        "2.0 MB (not metered, no cap)"
    );
    browser
        .eval("document.querySelector('#tunnel').setAttribute('data-screenshot', ''); return true")
        .await;
    screenshot(&browser, "appliance-tunnel").await;

    // The relay stops answering: the page says so, live, in words a practice understands.
    publish(TunnelReport {
        state: TunnelState::FallbackDirect,
        last_handshake_secs: Some(190),
        ..up
    })
    .await;
    browser
        .wait_for(
            "return document.querySelector('#tunnel')?.dataset.state === 'fallback_direct'",
            "the tunnel panel, fallen back",
            PAGE,
        )
        .await;
    assert_eq!(
        browser.text("#tunnel-state").await,
        "Fell back to direct — sessions will not survive a failover"
    );
    assert_eq!(browser.text("#tunnel-handshake").await, "3 min ago");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_page_shows_each_cellular_uplinks_operator_technology_signal_with_its_quality_and_sim_data()
 {
    use stayopen_shared::cellular::{AccessTechnology, CellularReport, ModemStatus, Registration};
    use stayopen_shared::topics::{Channel, DeviceTopic};

    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-CELL-1",
            "02:53:4f:00:17:04",
        )
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connect");
    let publish = |report: CellularReport| {
        let mut lte = common::telemetry::uplink("lte", 1, Some(48.0), 0.0);
        lte.cellular = Some(report);
        let payload = common::telemetry(id)
            .uplinks(vec![
                common::telemetry::uplink("fiber", 0, Some(12.0), 0.0),
                lte,
            ])
            .encode();
        let client = connection.client.clone();
        async move {
            client
                .publish(
                    DeviceTopic::new(id, Channel::Telemetry).to_string(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .expect("publish");
        }
    };
    // A 5G modem in a back office: a good RSRQ, but the RSRP of a mid-cell and a poor SINR.
    let placed = CellularReport {
        modem: Some("Quectel RM520N-GL".into()),
        operator_name: Some("Example Mobile".into()),
        operator_code: Some("310260".into()),
        access_technologies: vec![AccessTechnology::Nr5g, AccessTechnology::Lte],
        registration: Some(Registration::Home),
        rsrp_dbm: Some(-97.0),
        rsrq_db: Some(-12.5),
        sinr_db: Some(-1.5),
        signal_pct: Some(46),
        sim_rx_bytes: Some(734_003_200),
        sim_tx_bytes: Some(52_428_800),
        ..CellularReport::status_only(ModemStatus::Connected)
    };
    publish(placed.clone()).await;
    eventually(PAGE, "the cellular report stored", || async {
        let a = cloud.api(&admin).appliance(id).await.ok()?;
        a.uplinks.into_iter().find_map(|u| u.cellular)
    })
    .await;

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser.open_fragment(&format!("#/appliances/{id}")).await;
    let row = "#cellular-uplinks tr[data-uplink='lte']";
    browser
        .wait_for(
            &format!("return !!document.querySelector(\"{row}\")"),
            "the cellular panel",
            PAGE,
        )
        .await;
    assert_eq!(browser.text("#cellular h2").await, "Cellular signal");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#cellular-uplinks tbody tr').length")
            .await,
        serde_json::json!(1),
        "the fibre uplink has no modem row"
    );
    assert_eq!(
        browser.text(&format!("{row} .operator")).await,
        "Example Mobile (310260)"
    );
    assert_eq!(
        browser.text(&format!("{row} .technology")).await,
        "5G NR + LTE"
    );
    assert_eq!(browser.text(&format!("{row} .rsrp")).await, "-97 dBm fair");
    assert_eq!(browser.text(&format!("{row} .rsrq")).await, "-12.5 dB good");
    assert_eq!(browser.text(&format!("{row} .sinr")).await, "-1.5 dB poor");
    assert_eq!(
        browser.text(&format!("{row} .sim-data")).await,
        "734.0 MB received, 52.4 MB sent"
    );
    assert_eq!(
        browser.text(&format!("{row} .modem-status")).await,
        "connected"
    );
    browser
        .eval(
            "document.querySelector('#cellular').setAttribute('data-screenshot', ''); return true",
        )
        .await;
    screenshot(&browser, "appliance-cellular").await;

    // The technician moves the antenna to a window: the page follows, live.
    publish(CellularReport {
        rsrp_dbm: Some(-78.0),
        sinr_db: Some(21.0),
        ..placed
    })
    .await;
    browser
        .wait_for(
            &format!(
                "return document.querySelector(\"{row} .rsrp\")?.dataset.quality === 'excellent'"
            ),
            "the RSRP after moving the antenna",
            PAGE,
        )
        .await;
    assert_eq!(
        browser.text(&format!("{row} .rsrp")).await,
        "-78 dBm excellent"
    );
    assert_eq!(
        browser.text(&format!("{row} .sinr")).await,
        "21 dB excellent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fleets_lte_backups_report_a_varying_signal_on_the_appliance_page() {
    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    // The real agent over simulated links, whose LTE backup has a simulated modem.
    let fleet = Fleet::start(&cloud, &demo, 1);
    let id = appliance_id(&cloud, &admin, "SO-SIM-0000").await;
    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser.open_fragment(&format!("#/appliances/{id}")).await;
    let rsrp = "#cellular-uplinks tr[data-uplink='lte'] .rsrp";
    browser
        .wait_for(
            &format!("return /^-\\d+(\\.\\d)? dBm/.test(document.querySelector(\"{rsrp}\")?.textContent || '')"),
            "the simulated modem's RSRP",
            PAGE,
        )
        .await;
    let first = browser.text(rsrp).await;
    assert_eq!(
        browser
            .text("#cellular-uplinks tr[data-uplink='lte'] .operator")
            .await,
        "Example Mobile (310260)"
    );
    // The figures wander second by second, as a real modem's do: the page, opened again, shows
    // the latest.
    eventually(PAGE, "the simulated RSRP to change", || async {
        browser.open_fragment("#/").await;
        browser.open_fragment(&format!("#/appliances/{id}")).await;
        browser
            .wait_for(
                &format!(
                    "return /dBm/.test(document.querySelector(\"{rsrp}\")?.textContent || '')"
                ),
                "the simulated modem's RSRP again",
                PAGE,
            )
            .await;
        let now = browser.text(rsrp).await;
        (now != first).then_some(now)
    })
    .await;
    fleet.stop().await;
}

/// An appliance the test drives by hand: it reports every second, like an agent, with the uplink
/// the test last chose carrying its traffic (fibre primary, LTE backup), and nothing else.
struct HandDriven {
    appliance: ApplianceId,
    active: watch::Sender<&'static str>,
    task: tokio::task::JoinHandle<()>,
}

impl HandDriven {
    fn start(connection: common::device::DeviceConnection, appliance: ApplianceId) -> HandDriven {
        use rumqttc::QoS;
        use stayopen_shared::{Channel, DeviceTopic};
        let (active, chosen) = watch::channel("lte");
        let task = tokio::spawn(async move {
            loop {
                let sample =
                    common::telemetry::telemetry(appliance).fibre_and_lte(*chosen.borrow());
                let _ = connection
                    .client
                    .publish(
                        DeviceTopic::new(appliance, Channel::Telemetry).to_string(),
                        QoS::AtLeastOnce,
                        false,
                        sample.encode(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        HandDriven {
            appliance,
            active,
            task,
        }
    }

    /// Moves the traffic to `active` and waits until the cloud has stored a sample saying so.
    async fn carry_on(&self, cloud: &TestCloud, active: &'static str) {
        self.active.send_replace(active);
        eventually(Duration::from_secs(10), "the sample stored", || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT active_uplink FROM appliances WHERE id = $1",
            )
            .bind(self.appliance.as_uuid())
            .fetch_one(&cloud.owner_pool)
            .await
            .ok()
            .flatten()
            .filter(|stored| stored == active)
        })
        .await;
    }
}

impl Drop for HandDriven {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technicians_day_alerts_clear_by_state_bulk_acknowledge_a_serial_prefix_opens_the_box_the_csv_matches_and_phones_fit()
 {
    let _turn = require_built_dashboard().await;
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin_token = cloud.login(&demo.email, &demo.password).await;
    let api = cloud.api(&admin_token);
    let fleet = Fleet::start(&cloud, &demo, 3);
    // One appliance the test drives by hand, so nothing but the test says where its traffic is.
    let device = cloud
        .enrol_device(
            &demo.practices[1].enrollment_token,
            "SO-HAND-0001",
            "02:00:00:00:7a:01",
        )
        .await;
    let hand = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connect");
    let driven = HandDriven::start(connection, hand);
    driven.carry_on(&cloud, "lte").await;

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    sign_in(&browser, &demo.email, &demo.password).await;
    browser
        .eval("window.confirm = () => true; window.__stayopenNoReload = true; return true")
        .await;
    browser
        .wait_for(
            "const d = document.querySelector('#fleet-totals [data-stat=online] dd');
             return !!d && d.innerText.trim() === '4'",
            "four appliances online",
            Duration::from_secs(45),
        )
        .await;

    // The account's warnings: the demo MSP has no notification channel, and its admin no second
    // factor, which they set up from the warning itself.
    browser
        .wait_for_element("#fleet #no-channels-warning", PAGE)
        .await;
    browser
        .wait_for_element("#second-factor-warning", PAGE)
        .await;
    browser.click("#second-factor-start").await;
    browser.wait_for_element("#second-factor-qr", PAGE).await;
    let secret = browser.text("#second-factor-secret").await;
    let setup = TotpSetup {
        secret_base32: secret.trim().to_owned(),
        otpauth_uri: String::new(),
    };
    browser.type_into("#second-factor-code", "000000").await;
    browser
        .click("#second-factor-warning button[type=submit]")
        .await;
    browser
        .wait_for(
            "const n = document.querySelector('#second-factor-warning .notice');
             return !!n && n.innerText.length > 0",
            "a wrong code refused in place",
            PAGE,
        )
        .await;
    assert!(
        browser
            .eval("return !!document.querySelector('#current-role')")
            .await
            == serde_json::json!(true),
        "a wrong code does not end the session"
    );
    browser
        .type_into(
            "#second-factor-code",
            &totp_code(&setup, chrono::Utc::now().timestamp()),
        )
        .await;
    browser
        .click("#second-factor-warning button[type=submit]")
        .await;
    browser
        .wait_for(
            "return !document.querySelector('#second-factor-warning')",
            "the warning gone once the second factor is on",
            PAGE,
        )
        .await;
    assert!(api.me().await.expect("me").totp_enabled);

    // The smaller things met first. Tab reaches "Skip to content", then the menu, and "Sign out"
    // only after it (no element jumps the queue with a positive tabindex); a list of one page
    // shows no Previous/Next and the fleet no "Show more"; the alerts page warns of the missing
    // channel too; and the empty zero-touch table says so and offers the form that fills it.
    let tab_order = browser
        .eval(
            "const tabbable = [...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')]
                 .filter(e => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0);
             const navs = tabbable.filter(e => e.classList.contains('nav-link')).map(e => tabbable.indexOf(e));
             return {
                 jumping: [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).length,
                 first: tabbable[0].className,
                 menu: navs.length,
                 after_menu: tabbable.findIndex(e => e.id === 'sign-out') > Math.max(...navs),
             }",
        )
        .await;
    assert_eq!(
        tab_order,
        serde_json::json!({"jumping": 0, "first": "skip-link", "menu": 10, "after_menu": true}),
        "the Tab order"
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('#load-more').getBoundingClientRect().height")
            .await,
        serde_json::json!(0),
        "no 'Show more' under a fleet that fits one page"
    );
    browser.open_fragment("#/alerts").await;
    browser
        .wait_for(
            "return !!document.querySelector('#alerts #no-channels-warning')
                 && !!document.querySelector('#alerts .alert-group-section, #alerts .empty')",
            "the alerts page, loaded, with the no-channel warning",
            PAGE,
        )
        .await;
    assert_eq!(
        browser
            .eval(
                "const pagers = [...document.querySelectorAll('#alerts nav.pager')];
                 return pagers.length > 0 && pagers.every(p => p.getBoundingClientRect().height === 0)",
            )
            .await,
        serde_json::json!(true),
        "no Previous/Next on a single page of alerts"
    );
    let zero_touch = &demo.practices[0];
    browser
        .open_fragment(&format!("#/enrolment/{}", zero_touch.id))
        .await;
    browser
        .wait_for(
            "const e = document.querySelector('#claims-empty');
             const f = document.querySelector('#claim-serial');
             return !!e && e.innerText.includes('Register one with the form above')
                 && !!f && f.getBoundingClientRect().height > 0",
            "the empty zero-touch table saying so, beside its form",
            PAGE,
        )
        .await;
    browser.type_into("#claim-serial", "SO-ZT-0001").await;
    browser
        .type_into("#claim-key", "factory-key-0123456789abcdef0123456789")
        .await;
    browser
        .click("section[aria-labelledby=claims-heading] button[type=submit]")
        .await;
    browser
        .wait_for(
            "return !!document.querySelector(\"tr[data-serial='SO-ZT-0001']\")
                 && !document.querySelector('#claims-empty')",
            "the registered serial listed, the empty state gone",
            PAGE,
        )
        .await;
    assert_eq!(
        api.claimed_serials()
            .await
            .expect("claimed serials")
            .items
            .iter()
            .map(|c| c.serial.as_str())
            .collect::<Vec<_>>(),
        ["SO-ZT-0001"]
    );

    // 1. An alert clears by state. The hand-driven box failed over (a failover alert, critical),
    //    then came back to its fibre without any failback event: its next sample on the fibre
    //    clears the alert, the critical count drops, and the header says "online on primary".
    let failover = cloud
        .raise_alert(
            demo.tenant_id,
            hand,
            stayopen_cloud::domain::alerts::AlertChange::Raise {
                kind: stayopen_shared::alerts::AlertKind::Failover,
                subject: String::new(),
                summary: "Failover fiber to lte".into(),
            },
        )
        .await;
    browser.open_fragment(&format!("#/appliances/{hand}")).await;
    browser
        .wait_for(
            "const s = document.querySelector('#appliance-state');
             return !!s && s.dataset.state === 'on_backup'",
            "SO-HAND-0001 online on backup",
            PAGE,
        )
        .await;
    browser.open_fragment("#/fleet").await;
    browser
        .wait_for(
            "const d = document.querySelector('#fleet-totals [data-stat=critical-alerts] dd');
             return !!d && d.innerText.trim() === '1'",
            "one critical alert",
            PAGE,
        )
        .await;
    driven.carry_on(&cloud, "fiber").await;
    browser
        .wait_for(
            "const d = document.querySelector('#fleet-totals [data-stat=critical-alerts] dd');
             return !!d && d.innerText.trim() === '0'",
            "no critical alert once the box is back on its fibre",
            PAGE,
        )
        .await;
    let cleared: stayopen_shared::alerts::AlertView = api
        .get(&format!("/api/v1/alerts/{failover}"))
        .await
        .1
        .expect("the alert");
    assert_eq!(cleared.state, stayopen_shared::alerts::AlertState::Resolved);
    assert!(
        cleared
            .resolution
            .as_deref()
            .is_some_and(|r| r.contains("primary uplink fiber")),
        "the resolution names what cleared it: {:?}",
        cleared.resolution
    );
    browser.open_fragment(&format!("#/appliances/{hand}")).await;
    browser
        .wait_for(
            "const s = document.querySelector('#appliance-state');
             return !!s && s.dataset.state === 'primary' && s.innerText.includes('Online on primary')",
            "the header reading online on primary",
            PAGE,
        )
        .await;

    // 2. A bulk acknowledge: two alerts of the same box, selected by their group's checkbox.
    let mut raised = Vec::new();
    for kind in [
        stayopen_shared::alerts::AlertKind::DrillFailed,
        stayopen_shared::alerts::AlertKind::PolicyApplyFailed,
    ] {
        raised.push(
            cloud
                .raise_alert(
                    demo.tenant_id,
                    hand,
                    stayopen_cloud::domain::alerts::AlertChange::Raise {
                        kind,
                        subject: String::new(),
                        summary: format!("{kind:?} on SO-HAND-0001"),
                    },
                )
                .await,
        );
    }
    browser.open_fragment("#/alerts").await;
    let group = format!(".alert-group-section[data-appliance-id='{hand}']");
    browser
        .wait_for(
            &format!(
                "return document.querySelectorAll(\"{group} .alert-item[data-state=open]\").length === 2"
            ),
            "the box's two open alerts, grouped",
            PAGE,
        )
        .await;
    browser.click(&format!("{group} .select-group")).await;
    browser
        .wait_for(
            "return document.querySelector('#alert-selection').innerText.includes('2 alerts selected')",
            "two alerts selected",
            PAGE,
        )
        .await;
    screenshot(&browser, "alerts-bulk").await;
    browser.click("#bulk-acknowledge").await;
    browser
        .wait_for(
            &format!(
                "return document.querySelectorAll(\"{group} .alert-item[data-state=acknowledged]\").length === 2
                     && document.querySelector('#alert-bulk').innerText.includes('Acknowledged 2 alerts')"
            ),
            "both acknowledged",
            PAGE,
        )
        .await;
    for alert in &raised {
        let view: stayopen_shared::alerts::AlertView = api
            .get(&format!("/api/v1/alerts/{alert}"))
            .await
            .1
            .expect("alert");
        assert_eq!(
            view.state,
            stayopen_shared::alerts::AlertState::Acknowledged
        );
    }

    // 3. A serial prefix, typed after "/" and confirmed with Enter, opens the first match.
    browser.open_fragment("#/appliances").await;
    browser.wait_for_element(".appliance-row", PAGE).await;
    browser
        .eval("document.body.dispatchEvent(new KeyboardEvent('keydown', {key: '/', bubbles: true})); return true")
        .await;
    browser
        .wait_for(
            "return document.activeElement && document.activeElement.id === 'appliance-list-search'",
            "\"/\" focusing the search",
            PAGE,
        )
        .await;
    browser
        .type_into("#appliance-list-search", "so-sim-000")
        .await;
    browser
        .wait_for(
            "const rows = [...document.querySelectorAll('.appliance-row .serial')];
             return rows.length === 3 && rows.every(r => r.innerText.startsWith('SO-SIM-000'))",
            "the three SO-SIM boxes and not SO-HAND-0001",
            PAGE,
        )
        .await;
    let first_sim = appliance_id(&cloud, &admin_token, "SO-SIM-0000").await;
    browser
        .type_into("#appliance-list-search", "so-sim-000\u{E007}")
        .await;
    browser
        .wait_for(
            &format!(
                "return location.hash === '#/appliances/{first_sim}' && !!document.querySelector('#appliance-state')"
            ),
            "Enter opening SO-SIM-0000",
            PAGE,
        )
        .await;

    // 3b. Bulk: two boxes get the hand-driven box's own settings, found by its serial typed in
    // any case; the confirmation lists each setting as people read it. A serial that is not in
    // the fleet changes nothing and says so.
    let (status, _) = api
        .put::<_, serde_json::Value>(
            &format!("/api/v1/appliances/{hand}/policy"),
            &serde_json::json!({"detection_silence_ms": 1500, "failback_clean_period_secs": 600}),
        )
        .await;
    assert_eq!(status, 200);
    browser.open_fragment("#/appliances").await;
    browser
        .type_into("#appliance-list-search", "so-sim-000")
        .await;
    browser
        .wait_for(
            "return document.querySelectorAll('.appliance-row').length === 3",
            "the three SO-SIM boxes",
            PAGE,
        )
        .await;
    browser
        .eval(
            "window.__confirmed = [];
             window.confirm = m => { window.__confirmed.push(m); return true; };
             return true",
        )
        .await;
    let targets = [
        appliance_id(&cloud, &admin_token, "SO-SIM-0001").await,
        appliance_id(&cloud, &admin_token, "SO-SIM-0002").await,
    ];
    for target in targets {
        browser
            .click(&format!(
                ".appliance-row[data-appliance-id='{target}'] .select-appliance"
            ))
            .await;
    }
    let copy_settings_of = |serial: &'static str, outcome: &'static str| {
        let browser = &browser;
        async move {
            browser.type_into("#bulk-copy-from", serial).await;
            browser.click("#bulk-copy-settings").await;
            browser
                .wait_for(
                    &format!(
                        "const n = document.querySelector('#appliance-bulk .notice');
                         return !!n && n.innerText.includes({})",
                        serde_json::json!(outcome)
                    ),
                    outcome,
                    PAGE,
                )
                .await;
        }
    };
    copy_settings_of("SO-NOT-THERE", "No appliance with the serial SO-NOT-THERE").await;
    copy_settings_of("so-hand-0001", "Done for 2 appliances").await;
    let asked = browser.eval("return window.__confirmed").await;
    let asked = asked[0].as_str().unwrap_or_default();
    assert!(
        asked.starts_with("Give 2 appliances the settings of SO-HAND-0001?")
            && asked.contains("Silence before an uplink is down: 1500 ms (1.5 s)")
            && asked.contains("Clean time before failing back: 600 s (10 min)"),
        "{asked}"
    );
    for target in targets {
        let (status, layer) = api
            .get::<stayopen_shared::api::PolicyLayer>(&format!(
                "/api/v1/appliances/{target}/policy"
            ))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::Value::Object(layer.expect("the layer").overrides),
            serde_json::json!({"detection_silence_ms": 1500, "failback_clean_period_secs": 600})
        );
    }
    browser
        .eval("window.confirm = () => true; return true")
        .await;
    // Off the filtered list, so the export below starts from the whole fleet.
    browser.open_fragment("#/fleet").await;
    browser.wait_for_element("#fleet-totals", PAGE).await;

    // 4. The CSV export holds the rows the API lists, in its order.
    browser.open_fragment("#/appliances").await;
    browser.wait_for_element(".appliance-row", PAGE).await;
    browser.click("#export-appliances").await;
    let csv = eventually(Duration::from_secs(30), "the downloaded CSV", || async {
        std::fs::read_dir(browser.download_dir())
            .ok()?
            .filter_map(Result::ok)
            .find(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("appliances-") && name.ends_with(".csv")
            })
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|text| !text.is_empty())
    })
    .await;
    let rows = common::csv::rows(&csv);
    let listed = api.appliances("limit=500").await.expect("appliances").items;
    assert_eq!(rows[0][0], "serial");
    assert_eq!(
        rows[1..].iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        listed.iter().map(|a| a.serial.clone()).collect::<Vec<_>>()
    );
    for (row, appliance) in rows[1..].iter().zip(&listed) {
        assert_eq!(row[1], appliance.practice_name);
        assert_eq!(row[10], appliance.id.to_string());
    }

    // A practice's pages show times in the practice's own zone and say so; elsewhere, the
    // viewer's, with the zone named.
    let practice = &demo.practices[1];
    sqlx::query("UPDATE practices SET time_zone = 'America/Chicago' WHERE id = $1")
        .bind(practice.id.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("zone");
    // The site says whom to call, and each line's ISP and circuit, as links a phone dials.
    let site = api.sites(practice.id).await.expect("sites").items[0].id;
    let (status, _) = api
        .patch::<_, serde_json::Value>(
            &format!("/api/v1/sites/{site}"),
            &serde_json::json!({"contact_name": "Dana", "contact_phone": "+1 555 0100",
                                "isps": [{"uplink": "fiber", "isp": "MetroFiber",
                                          "circuit_id": "MF-778812", "support_phone": "+1 555 0199"}]}),
        )
        .await;
    assert_eq!(status, 200);
    browser
        .open_fragment(&format!("#/practices/{}", practice.id))
        .await;
    browser
        .wait_for(
            "const c = document.querySelector('.site-card .site-contact a[href=\"tel:+15550100\"]');
             const l = document.querySelector('.site-card .site-isps tr[data-uplink=fiber]');
             return !!c && !!l && l.innerText.includes('MF-778812')",
            "the site's contact and ISP line",
            PAGE,
        )
        .await;
    browser
        .wait_for(
            "const z = document.querySelector('#practice-zone');
             const t = document.querySelector('#practice time[title]');
             return !!z && z.innerText.includes('America/Chicago')
                 && !!t && /(CST|GMT-6)$/.test(t.title)",
            "the practice's times in Chicago time",
            PAGE,
        )
        .await;
    browser.open_fragment(&format!("#/appliances/{hand}")).await;
    browser
        .wait_for(
            "const z = document.querySelector('#practice-zone');
             return !!z && z.innerText.includes('America/Chicago')",
            "the practice's zone on its appliance's page",
            PAGE,
        )
        .await;
    browser.open_fragment("#/audit").await;
    browser
        .wait_for(
            "const t = document.querySelector('#audit time');
             return !!t && /\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} \\S+$/.test(t.innerText)",
            "audit times with their zone",
            PAGE,
        )
        .await;
    assert_eq!(
        browser
            .eval("return !!document.querySelector('#practice-zone')")
            .await,
        serde_json::json!(false),
        "back in the viewer's zone off the practice's pages"
    );

    // 5. At 390 px wide every main page fits: nothing scrolls sideways, and the menu folds away.
    browser.phone(390, 844).await;
    for (fragment, name) in [
        ("#/fleet".to_owned(), "phone-fleet"),
        ("#/appliances".to_owned(), "phone-appliances"),
        ("#/alerts".to_owned(), "phone-alerts"),
        (format!("#/practices/{}", practice.id), "phone-practice"),
        (format!("#/appliances/{hand}"), "phone-appliance"),
        ("#/policies".to_owned(), "phone-policies"),
        ("#/reports".to_owned(), "phone-reports"),
        ("#/audit".to_owned(), "phone-audit"),
    ] {
        browser.open_fragment(&fragment).await;
        browser
            .wait_for(
                "const m = document.querySelector('#main .page, #main .card');
                 return !!m && !document.querySelector('#main .loading')",
                &format!("{fragment} loaded"),
                PAGE,
            )
            .await;
        if name == "phone-appliances" {
            // With a box selected, the bulk actions fit too.
            browser.click(".appliance-row .select-appliance").await;
            browser
                .wait_for(
                    "const b = document.querySelector('#appliance-bulk');
                     return !!b && !b.classList.contains('hidden') && !!b.querySelector('#bulk-copy-from')",
                    "the bulk actions shown",
                    PAGE,
                )
                .await;
        }
        // Let live data and charts settle before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let widths = browser
            .eval(
                "return [window.innerWidth, document.documentElement.scrollWidth,
                         [...document.querySelectorAll('body *')]
                            .filter(e => e.getBoundingClientRect().width > 391)
                            .filter(e => ![...e.children].some(c => c.getBoundingClientRect().width > 391))
                            .slice(0, 6)
                            .map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right) + ' ' + (e.innerText || '').slice(0, 40))]",
            )
            .await;
        assert_eq!(widths[0], 390, "{fragment}: the phone's width: {widths}");
        assert!(
            widths[1].as_u64().unwrap_or(u64::MAX) <= 390,
            "{fragment} scrolls sideways at 390 px: {widths}"
        );
        let nav_shown = browser
            .eval("return document.querySelector('#main-nav').getBoundingClientRect().height > 0")
            .await;
        assert_eq!(
            nav_shown,
            serde_json::json!(false),
            "{fragment}: the menu folded"
        );
        screenshot(&browser, name).await;
    }
    browser.click("#menu-toggle").await;
    browser
        .wait_for(
            "return document.querySelector('#main-nav').getBoundingClientRect().height > 0
                 && document.querySelector('#menu-toggle').getAttribute('aria-expanded') === 'true'",
            "the menu unfolded",
            PAGE,
        )
        .await;
    browser.click(".nav-link[data-nav=Alerts]").await;
    browser
        .wait_for(
            "return location.hash === '#/alerts'
                 && document.querySelector('#main-nav').getBoundingClientRect().height === 0",
            "the menu folding again on the alerts page",
            PAGE,
        )
        .await;
    browser.desktop().await;

    drop(driven);
    fleet.stop().await;
}

/// The documentation's screenshots, taken from the running demo (`infra/scripts/screenshots.sh`
/// starts it and runs this): its MSP, practices and 20 simulated appliances as a visitor sees
/// them, on a desktop and at 390 px. Ignored in the test suite, which has no demo running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the demo running: infra/scripts/screenshots.sh"]
async fn demo_screenshots() {
    let url = std::env::var("STAYOPEN_DEMO_URL").expect("STAYOPEN_DEMO_URL: the demo's dashboard");
    let seed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::env::var("STAYOPEN_DEMO_SEED").expect("STAYOPEN_DEMO_SEED: seed.json"))
            .expect("read the demo's seed"),
    )
    .expect("the seed's JSON");
    let email = seed["email"].as_str().expect("email");
    let password = seed["password"].as_str().expect("password");
    let http = reqwest::Client::new();
    let token: String = {
        let login: serde_json::Value = http
            .post(format!("{url}/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        login["access_token"].as_str().expect("token").to_owned()
    };
    let get = |path: String| {
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        async move {
            http.get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    // The fleet is up: every simulated appliance online.
    eventually(
        Duration::from_secs(180),
        "the demo fleet online",
        || async {
            let totals = get("/api/v1/fleet/totals".into()).await;
            (totals["appliances"].as_u64() > Some(0) && totals["online"] == totals["appliances"])
                .then_some(())
        },
    )
    .await;
    // The demo starts with every box's scheduled drill, 60 s on the backup: wait until those are
    // over and only the scheduled outages (every third box, never all at once) remain, so the
    // pictures show an ordinary day.
    let _ = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            let totals = get("/api/v1/fleet/totals".into()).await;
            let (on_backup, all) = (
                totals["on_backup"].as_u64().unwrap_or(0),
                totals["appliances"].as_u64().unwrap_or(0),
            );
            if all > 0 && on_backup * 3 <= all {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    let appliances = get("/api/v1/appliances?limit=500&sort=state".into()).await;
    let appliance = appliances["items"][0]["id"]
        .as_str()
        .expect("an appliance")
        .to_owned();
    let practice = appliances["items"][0]["practice_id"]
        .as_str()
        .expect("its practice")
        .to_owned();

    let browser = Browser::start().await;
    browser.goto(&url).await;
    sign_in(&browser, email, password).await;
    let pages = [
        ("fleet", "#/fleet".to_owned(), "#fleet .practice-row"),
        ("appliances", "#/appliances".to_owned(), ".appliance-row"),
        ("alerts", "#/alerts".to_owned(), "#alerts"),
        (
            "practice",
            format!("#/practices/{practice}"),
            "#practice .appliance",
        ),
        (
            "appliance",
            format!("#/appliances/{appliance}"),
            "#appliance-state",
        ),
        ("policies", "#/policies".to_owned(), "#policies"),
        ("audit", "#/audit".to_owned(), "#audit-table tbody tr"),
        ("reports", "#/reports".to_owned(), "#main .page"),
    ];
    for (phone, prefix) in [(false, ""), (true, "phone-")] {
        if phone {
            browser.phone(390, 844).await;
        }
        for (name, fragment, ready) in &pages {
            if phone && matches!(*name, "policies" | "audit" | "reports") {
                continue;
            }
            browser.open_fragment(fragment).await;
            browser
                .wait_for_element(ready, Duration::from_secs(30))
                .await;
            // Live data and charts settle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            screenshot(&browser, &format!("{prefix}{name}")).await;
        }
    }
    browser.desktop().await;
}
