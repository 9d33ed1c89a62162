//! The dashboard in a real browser: headless Chromium signs in and watches a live simulated fleet.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::Duration;

use common::spawn_cloud;
use stayopen_appliance::fleet_sim::{self, FleetOptions};
use tokio::sync::watch;
use webdriver::Browser;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msp_admin_signs_in_and_sees_the_fleet_update_live_without_a_reload() {
    require_built_dashboard();
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let state = tempfile::tempdir().expect("state root");
    let tokens: Vec<String> = demo
        .practices
        .iter()
        .map(|p| p.enrollment_token.clone())
        .collect();
    let (stop, stopped) = watch::channel(false);
    let fleet = FleetOptions {
        api_url: cloud.base_url.clone(),
        enrollment_tokens: tokens.clone(),
        first_index: 0,
        count: 6,
        state_root: state.path().join("first"),
        telemetry_interval_secs: 1,
    };
    let first_fleet = tokio::spawn(fleet_sim::run(fleet, stopped.clone()));

    let browser = Browser::start().await;
    browser.goto(&cloud.base_url).await;
    browser
        .wait_for(
            "return !!document.querySelector('#login-form')",
            "the login form",
            Duration::from_secs(30),
        )
        .await;

    // A wrong password is refused with a visible message.
    browser.type_into("#email", &demo.email).await;
    browser.type_into("#password", "wrong password").await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "const e = document.querySelector('#login-error'); return !!e && e.innerText.length > 0",
            "the login error",
            Duration::from_secs(15),
        )
        .await;

    browser.type_into("#password", &demo.password).await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "return !!document.querySelector('#fleet')",
            "the fleet page",
            Duration::from_secs(15),
        )
        .await;
    browser
        .eval("window.__stayopenNoReload = true; return true")
        .await;

    browser
        .wait_for(
            "const badges = [...document.querySelectorAll('.appliance .online-badge')];
             return badges.length === 6 && badges.every(b => b.innerText.trim().toLowerCase() === 'online')
                 && [...document.querySelectorAll('.appliance .active-uplink')].every(c => c.innerText.trim().length > 0)",
            "six online appliances with an active uplink",
            Duration::from_secs(45),
        )
        .await;
    let practices = browser
        .eval("return document.querySelectorAll('.practice').length")
        .await;
    assert_eq!(practices, 2);
    let text = browser.eval("return document.body.innerText").await;
    let text = text.as_str().unwrap_or_default();
    for practice in &demo.practices {
        assert!(
            text.contains(&practice.name),
            "page shows {}",
            practice.name
        );
    }
    assert!(
        text.contains("Lakeside IT Partners"),
        "page shows the tenant"
    );

    // A newly installed appliance appears on its own: the page polls, it is never reloaded.
    let (stop_new, stopped_new) = watch::channel(false);
    let newcomer = FleetOptions {
        api_url: cloud.base_url.clone(),
        enrollment_tokens: tokens,
        first_index: 6,
        count: 1,
        state_root: state.path().join("second"),
        telemetry_interval_secs: 1,
    };
    let second_fleet = tokio::spawn(fleet_sim::run(newcomer, stopped_new));
    browser
        .wait_for(
            "return document.querySelectorAll('.appliance').length === 7 && window.__stayopenNoReload === true",
            "the seventh appliance to appear without a reload",
            Duration::from_secs(45),
        )
        .await;

    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::env::var_os("STAYOPEN_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&out).expect("screenshot dir");
    std::fs::write(out.join("fleet.png"), png).expect("write screenshot");

    stop.send(true).expect("stop");
    stop_new.send(true).expect("stop");
    first_fleet.await.expect("first fleet");
    second_fleet.await.expect("second fleet");
}
