//! Warnings that concern the whole account rather than one page: an MSP admin without a second
//! factor (set up here, with the authenticator app's QR code), and an MSP whose alerts reach
//! nobody because it has no notification channel.

use leptos::prelude::*;
use stayopen_shared::alerts::ChannelView;
use stayopen_shared::api::{Page, Role, TotpCode, TotpSetup};

use crate::api;
use crate::components::{Notice, act, notice_view, use_session};
use crate::logic::{Route, qr_svg_path};

/// For an MSP admin without a second factor: a warning, and the setup right here.
#[component]
pub fn SecondFactorWarning() -> impl IntoView {
    let session = use_session();
    let needed = move || {
        session.user.with(|u| {
            u.as_ref()
                .is_some_and(|u| u.role == Role::MspAdmin && !u.totp_enabled)
        })
    };
    let setup: RwSignal<Option<TotpSetup>> = RwSignal::new(None);
    let code = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let start = move |_| {
        act(
            busy,
            notice,
            "",
            async move { api::post::<_, TotpSetup>(session, "/api/v1/auth/totp/setup", &()).await },
            move |started| setup.set(Some(started)),
        );
    };
    let confirm = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = TotpCode {
            code: code.get_untracked().trim().to_owned(),
        };
        act(
            busy,
            notice,
            "The second factor is on: sign-ins now ask for a code.",
            async move {
                // A wrong code comes back as the cloud's message (`api` keeps the session).
                api::post::<_, ()>(session, "/api/v1/auth/totp/confirm", &body).await
            },
            move |_| {
                setup.set(None);
                session.user.update(|u| {
                    if let Some(u) = u {
                        u.totp_enabled = true;
                    }
                });
            },
        );
    };
    move || {
        needed().then(|| {
            view! {
                <section class="warning-banner" id="second-factor-warning" role="alert">
                    <p>
                        "Your MSP admin account has no second factor: anyone with your password can change every practice. "
                        {move || setup.with(Option::is_none).then(|| view! {
                            <button type="button" id="second-factor-start" class="button button-primary button-small" disabled=move || busy.get() on:click=start>
                                "Set up a second factor"
                            </button>
                        })}
                    </p>
                    {move || setup.get().map(|s| {
                        let qr = qrcodegen::QrCode::encode_text(&s.otpauth_uri, qrcodegen::QrCodeEcc::Medium).ok();
                        view! {
                            <div class="token-grid">
                                {qr.map(|qr| {
                                    let border = 4;
                                    let size = qr.size() + 2 * border;
                                    let path = qr_svg_path(qr.size(), border, |x, y| qr.get_module(x, y));
                                    view! {
                                        <svg class="qr" id="second-factor-qr" viewBox=format!("0 0 {size} {size}") role="img"
                                            aria-label="QR code for the authenticator app" shape-rendering="crispEdges">
                                            <rect width=size height=size fill="#fff" />
                                            <path d=path fill="#000" />
                                        </svg>
                                    }
                                })}
                                <form class="form" on:submit=confirm>
                                    <p>"Scan the code with an authenticator app, or enter this key in it:"</p>
                                    <p><code id="second-factor-secret">{s.secret_base32.clone()}</code></p>
                                    <div class="field">
                                        <label for="second-factor-code">"The app's current 6-digit code"</label>
                                        <input id="second-factor-code" type="text" inputmode="numeric" autocomplete="one-time-code" bind:value=code required />
                                    </div>
                                    <button type="submit" class="button button-primary" disabled=move || busy.get()>"Turn it on"</button>
                                </form>
                            </div>
                        }
                    })}
                    {notice_view(notice)}
                </section>
            }
        })
    }
}

/// For those who configure: a warning when no notification channel exists, so alerts reach
/// nobody. Shown on the fleet and alerts pages.
#[component]
pub fn NoChannelsWarning() -> impl IntoView {
    let session = use_session();
    let none = RwSignal::new(false);
    if session.capabilities().configure {
        leptos::task::spawn_local(async move {
            if let Ok(page) =
                api::get::<Page<ChannelView>>(session, "/api/v1/notification-channels?limit=1")
                    .await
            {
                none.set(page.items.is_empty());
            }
        });
    }
    move || {
        none.get().then(|| {
            view! {
                <p class="warning-banner" id="no-channels-warning" role="alert">
                    "No notification channel: alerts reach nobody until one is added. "
                    <a href=Route::Notifications.href()>"Add a channel"</a>
                </p>
            }
        })
    }
}
