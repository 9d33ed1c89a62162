//! The sign-in form.

use leptos::ev::SubmitEvent;
use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, Failure};
use crate::session::Session;

#[component]
pub fn LoginPage(session: Session) -> impl IntoView {
    let email: NodeRef<Input> = NodeRef::new();
    let password: NodeRef<Input> = NodeRef::new();
    let code: NodeRef<Input> = NodeRef::new();
    // Shown once the cloud says this account has a second factor.
    let needs_code = RwSignal::new(false);
    let busy = RwSignal::new(false);

    // `autofocus` only applies at page load; the form is also shown after sign-out and expiry.
    Effect::new(move |_| {
        if let Some(input) = email.get() {
            let _ = input.focus();
        }
    });

    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        // Read the fields at submit time rather than tracking input events, so browser autofill
        // (which does not always fire them) works.
        let email_value = email.get().map(|i| i.value()).unwrap_or_default();
        let password_value = password.get().map(|i| i.value()).unwrap_or_default();
        let email_value = email_value.trim().to_owned();
        if email_value.is_empty() || password_value.is_empty() {
            session
                .login_message
                .set(Some("Enter your email address and password.".to_owned()));
            return;
        }
        let code_value = code
            .get()
            .map(|i| i.value().trim().to_owned())
            .filter(|c| !c.is_empty());
        busy.set(true);
        session.login_message.set(None);
        spawn_local(async move {
            match api::login(email_value, password_value, code_value).await {
                Ok(response) => {
                    busy.set(false);
                    session.sign_in(response);
                }
                Err(failure) => {
                    busy.set(false);
                    if failure.code() == Some("totp_required") {
                        needs_code.set(true);
                        session.login_message.set(Some(
                            "Enter the 6-digit code from your authenticator app.".to_owned(),
                        ));
                        if let Some(input) = code.get_untracked() {
                            let _ = input.focus();
                        }
                        return;
                    }
                    let message = match failure {
                        Failure::Unauthorized(None) => {
                            "The email address or password is incorrect.".to_owned()
                        }
                        Failure::Network(_) => "The StayOpen cloud cannot be reached. Check your \
                                                connection and try again."
                            .to_owned(),
                        other => other.to_string(),
                    };
                    session.login_message.set(Some(message));
                    if let Some(input) = password.get_untracked() {
                        input.set_value("");
                        let _ = input.focus();
                    }
                }
            }
        });
    };

    view! {
        <main class="login-page">
            <form id="login-form" class="card login-card" on:submit=on_submit novalidate>
                <div class="brand brand-large">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "StayOpen"
                </div>
                <h1>"Sign in"</h1>
                <p class="muted">"Monitor the internet failover of the practices you manage."</p>
                {move || {
                    session
                        .login_message
                        .get()
                        .map(|message| {
                            view! {
                                <p id="login-error" class="alert alert-error" role="alert">
                                    {message}
                                </p>
                            }
                        })
                }}
                <div class="field">
                    <label for="email">"Email"</label>
                    <input
                        id="email"
                        name="email"
                        type="email"
                        autocomplete="username"
                        required
                        node_ref=email
                    />
                </div>
                <div class="field">
                    <label for="password">"Password"</label>
                    <input
                        id="password"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                        node_ref=password
                    />
                </div>
                <div class="field" hidden=move || !needs_code.get()>
                    <label for="totp">"Authentication code"</label>
                    <input
                        id="totp"
                        name="totp"
                        type="text"
                        inputmode="numeric"
                        autocomplete="one-time-code"
                        pattern="[0-9]{6}"
                        maxlength="6"
                        node_ref=code
                    />
                </div>
                <button
                    id="login-submit"
                    class="button button-primary"
                    type="submit"
                    disabled=move || busy.get()
                    aria-busy=move || if busy.get() { "true" } else { "false" }
                >
                    {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
