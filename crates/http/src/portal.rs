//! The privacy centre at `/privacy`: the shop's customers sign in with a code sent by email,
//! then see what the shop holds about them and why, switch each consent purpose, download
//! their export, correct their data, object, and erase their account. French by default
//! (`Accept-Language`, and a switch), server-rendered (maud), no script at all.
//!
//! Every form carries a token bound to the session (or, before sign-in, to a random
//! pre-session cookie); every page is sent with a strict Content-Security-Policy, and cookies
//! are `HttpOnly`, `SameSite=Strict`, and `Secure` when `server.public_url` is `https`.

use std::collections::BTreeMap;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use confidant_core::privacy::LegalBasis;
use confidant_core::time::format_millis;
use confidant_service::portal::{CodeProblem, PortalSession};
use confidant_service::privacy::{ConsentRequest, DsrAction, DsrRequest, Evidence};
use confidant_service::{App, ServiceError};
use maud::{html, Markup, DOCTYPE};

use crate::web::*;
use serde_json::Value;

const SESSION: &str = "cf_ps";
const PRE: &str = "cf_pre";
const PENDING: &str = "cf_pending";
const PATH: &str = "/privacy";
/// The purpose advertising categories refine (as `/v1/consent` records them).
const AD_PURPOSE: &str = "advertising.targeted";
const STYLE: &str = include_str!("portal.css");

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/privacy", get(home))
        .route("/privacy/", get(home))
        .route("/privacy/style.css", get(style))
        .route("/privacy/code", post(request_code))
        .route("/privacy/verify", get(verify_page).post(verify))
        .route("/privacy/consent", post(consent))
        .route("/privacy/export", post(export))
        .route("/privacy/rectify", post(rectify))
        .route("/privacy/object", post(object))
        .route("/privacy/erase", get(erase_page).post(erase))
        .route("/privacy/signout", post(sign_out))
}

// ---------------------------------------------------------------------------- pages

fn page(app: &App, lang: Lang, status: StatusCode, title: &str, body: Markup, cookies: Vec<HeaderValue>) -> Response {
    let shop = app.policy().config().controller.name.clone();
    let other = match lang {
        Lang::Fr => ("en", "English"),
        Lang::En => ("fr", "Français"),
    };
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " — " (shop) }
                link rel="stylesheet" href="/privacy/style.css";
            }
            body {
                header {
                    p.shop { (shop) " · " (lang.t("Espace confidentialité", "Privacy centre")) }
                    nav { a href={ "/privacy?lang=" (other.0) } hreflang=(other.0) lang=(other.0) { (other.1) } }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    };
    html_page(status, markup.into_string(), cookies)
}

/// A page that says what went wrong, in the person's language, with a way back.
fn problem(app: &App, lang: Lang, status: StatusCode, message: &str) -> Response {
    let body = html! {
        p.problem role="alert" { (message) }
        p { a href="/privacy" { (lang.t("Revenir à l'espace confidentialité", "Back to the privacy centre")) } }
    };
    page(app, lang, status, lang.t("Action impossible", "This did not work"), body, Vec::new())
}

fn unavailable(app: &App, lang: Lang, e: ServiceError) -> Response {
    tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "privacy centre request failed");
    problem(app, lang, StatusCode::SERVICE_UNAVAILABLE, lang.t("Le service est momentanément indisponible. Réessayez dans un instant.", "The service is unavailable for a moment. Please try again shortly."))
}

fn form_token_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

async fn style() -> Response {
    stylesheet(STYLE)
}

/// The pre-session cookie of a signed-out browser: the one it has, or a new one to set.
fn pre_session(app: &App, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, PRE).filter(|v| v.len() >= 20 && v.len() <= 64) {
        Some(v) => (v, None),
        None => {
            let v = app.random_token();
            let c = set_cookie(app, PATH, PRE, &v, None);
            (v, Some(c))
        }
    }
}

async fn session_of(app: &App, headers: &HeaderMap) -> Result<Option<(String, PortalSession)>, ServiceError> {
    let Some(token) = cookie(headers, SESSION) else { return Ok(None) };
    Ok(app.portal_session(&token).await?.map(|s| (token, s)))
}

// ---------------------------------------------------------------------------- signed out

async fn home(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = language(&headers, q.lang.as_deref());
    let mut cookies = Vec::new();
    if q.lang.is_some() {
        cookies.push(set_cookie(&app, PATH, LANG, lang.code(), Some(365 * 86_400)));
    }
    match session_of(&app, &headers).await {
        Ok(Some((_, s))) => dashboard(&app, lang, &s, cookies).await,
        Ok(None) => {
            if cookie(&headers, SESSION).is_some() {
                // A session cookie that opens nothing: forged, expired or ended.
                let _ = app.audit("subject:privacy-centre", "privacy_centre.session_refused", None, serde_json::json!({"reason": "unknown_or_expired"})).await;
                cookies.push(clear_cookie(&app, PATH, SESSION));
            }
            let (pre, set) = pre_session(&app, &headers);
            cookies.extend(set);
            sign_in_page(&app, lang, &pre, StatusCode::OK, None, cookies)
        }
        Err(e) => unavailable(&app, lang, e),
    }
}

fn sign_in_page(app: &App, lang: Lang, pre: &str, status: StatusCode, message: Option<&str>, cookies: Vec<HeaderValue>) -> Response {
    let body = html! {
        p { (lang.t(
            "Consultez les données que nous détenons sur vous, choisissez ce que vous acceptez, téléchargez vos données ou supprimez votre compte. Saisissez votre adresse e-mail : nous vous envoyons un code de connexion.",
            "See the data we hold about you, choose what you agree to, download your data or erase your account. Enter your email address: we will send you a sign-in code.")) }
        @if let Some(m) = message { p.problem role="alert" { (m) } }
        form method="post" action="/privacy/code" {
            (form_token_field(&app.form_token(pre)))
            input type="hidden" name="lang" value=(lang.code());
            label for="email" { (lang.t("Adresse e-mail", "Email address")) }
            input id="email" name="email" type="email" autocomplete="email" required maxlength="254";
            button type="submit" { (lang.t("Recevoir un code", "Send me a code")) }
        }
    };
    page(app, lang, status, lang.t("Vos données personnelles", "Your personal data"), body, cookies)
}

async fn request_code(State(app): State<App>, ext: axum::http::Extensions, headers: HeaderMap, body: Bytes) -> Response {
    let Some(f) = form(&body) else { return problem(&app, language(&headers, None), StatusCode::PAYLOAD_TOO_LARGE, "…") };
    let lang = language(&headers, field(&f, "lang"));
    let (pre, _) = pre_session(&app, &headers);
    if cookie(&headers, PRE).is_none() || !app.form_token_ok(&pre, field(&f, "csrf").unwrap_or("")) {
        return csrf_refused(&app, lang, None).await;
    }
    let email = field(&f, "email").unwrap_or("");
    match app.portal_request_code(email, peer(&app, &ext, &headers), lang.code()).await {
        Ok(pending) => {
            let minutes = i64::from(app.config().privacy_centre.code_minutes);
            redirect("/privacy/verify", vec![set_cookie(&app, PATH, PENDING, &pending, Some(minutes * 60))])
        }
        Err(ServiceError::Invalid { code: "invalid_email", .. }) => {
            sign_in_page(&app, lang, &pre, StatusCode::BAD_REQUEST, Some(lang.t("Cette adresse e-mail n'est pas valide.", "This email address is not valid.")), Vec::new())
        }
        Err(ServiceError::Invalid { code: "rate_limited", .. }) => problem(
            &app,
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            lang.t("Trop de demandes de code depuis cette connexion. Réessayez dans quelques minutes.", "Too many code requests from this connection. Please try again in a few minutes."),
        ),
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn csrf_refused(app: &App, lang: Lang, subject: Option<confidant_core::ids::ProfileId>) -> Response {
    let _ = app.audit("subject:privacy-centre", "privacy_centre.form_refused", subject, serde_json::json!({"reason": "csrf"})).await;
    problem(
        app,
        lang,
        StatusCode::FORBIDDEN,
        lang.t(
            "Ce formulaire a expiré ou ne vient pas de cette page. Rien n'a été modifié ; rechargez la page et recommencez.",
            "This form has expired or did not come from this page. Nothing was changed; reload the page and try again.",
        ),
    )
}

async fn verify_page(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = language(&headers, q.lang.as_deref());
    let (pre, set) = pre_session(&app, &headers);
    code_page(&app, lang, &pre, StatusCode::OK, None, set.into_iter().collect())
}

fn code_page(app: &App, lang: Lang, pre: &str, status: StatusCode, message: Option<&str>, cookies: Vec<HeaderValue>) -> Response {
    let body = html! {
        p { (lang.t(
            "Si cette adresse est connue, un code à six chiffres vient de lui être envoyé. Il est valable quelques minutes, une seule fois.",
            "If this address is known, a six-digit code has just been sent to it. It is valid for a few minutes, once.")) }
        @if let Some(m) = message { p.problem role="alert" { (m) } }
        form method="post" action="/privacy/verify" {
            (form_token_field(&app.form_token(pre)))
            input type="hidden" name="lang" value=(lang.code());
            label for="code" { (lang.t("Code reçu par e-mail", "Code from the email")) }
            input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,7}" maxlength="7" required;
            button type="submit" { (lang.t("Se connecter", "Sign in")) }
        }
        p { a href="/privacy" { (lang.t("Demander un nouveau code", "Ask for a new code")) } }
    };
    page(app, lang, status, lang.t("Saisissez votre code", "Enter your code"), body, cookies)
}

async fn verify(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(f) = form(&body) else { return problem(&app, language(&headers, None), StatusCode::PAYLOAD_TOO_LARGE, "…") };
    let lang = language(&headers, field(&f, "lang"));
    let (pre, _) = pre_session(&app, &headers);
    if cookie(&headers, PRE).is_none() || !app.form_token_ok(&pre, field(&f, "csrf").unwrap_or("")) {
        return csrf_refused(&app, lang, None).await;
    }
    let pending = cookie(&headers, PENDING).unwrap_or_default();
    match app.portal_redeem(&pending, field(&f, "code").unwrap_or("")).await {
        Ok(Ok(token)) => {
            let minutes = i64::from(app.config().privacy_centre.session_minutes);
            redirect("/privacy", vec![set_cookie(&app, PATH, SESSION, &token, Some(minutes * 60)), clear_cookie(&app, PATH, PENDING)])
        }
        Ok(Err(p)) => {
            let left;
            let (status, message) = match p {
                CodeProblem::Wrong { left: n } => {
                    left = match lang {
                        Lang::Fr => format!("Ce code n'est pas le bon. Il vous reste {n} essai(s)."),
                        Lang::En => format!("This code is not right. You have {n} attempt(s) left."),
                    };
                    (StatusCode::BAD_REQUEST, left.as_str())
                }
                CodeProblem::Malformed => (StatusCode::BAD_REQUEST, lang.t("Le code compte six chiffres.", "The code has six digits.")),
                CodeProblem::TooMany => (
                    StatusCode::TOO_MANY_REQUESTS,
                    lang.t("Trop d'essais : ce code n'est plus valable. Demandez-en un nouveau.", "Too many attempts: this code is no longer valid. Ask for a new one."),
                ),
                CodeProblem::Expired | CodeProblem::Used | CodeProblem::Unknown => (
                    StatusCode::BAD_REQUEST,
                    lang.t("Ce code n'est pas valable : il a expiré ou a déjà servi. Demandez-en un nouveau.", "This code is not valid: it has expired or was already used. Ask for a new one."),
                ),
            };
            code_page(&app, lang, &pre, status, Some(message), Vec::new())
        }
        Err(e) => unavailable(&app, lang, e),
    }
}

// ---------------------------------------------------------------------------- signed in

/// The session and the checked form of a signed-in POST, or the page that refuses it.
async fn signed_in_form(app: &App, headers: &HeaderMap, body: &Bytes) -> Result<(Lang, String, PortalSession, Vec<(String, String)>), Response> {
    let Some(f) = form(body) else { return Err(problem(app, language(headers, None), StatusCode::PAYLOAD_TOO_LARGE, "…")) };
    let lang = language(headers, field(&f, "lang"));
    let (token, s) = match session_of(app, headers).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            let _ = app.audit("subject:privacy-centre", "privacy_centre.form_refused", None, serde_json::json!({"reason": "no_session"})).await;
            return Err(problem(
                app,
                lang,
                StatusCode::UNAUTHORIZED,
                lang.t("Votre session a expiré ou n'est pas valable. Reconnectez-vous ; rien n'a été modifié.", "Your session has expired or is not valid. Please sign in again; nothing was changed."),
            ));
        }
        Err(e) => return Err(unavailable(app, lang, e)),
    };
    if !app.form_token_ok(&s.csrf, field(&f, "csrf").unwrap_or("")) {
        return Err(csrf_refused(app, lang, Some(s.profile)).await);
    }
    Ok((lang, token, s, f))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The legal basis in plain words.
fn basis(lang: Lang, b: LegalBasis) -> &'static str {
    match b {
        LegalBasis::Consent => lang.t("votre consentement", "your consent"),
        LegalBasis::Contract => lang.t("l'exécution de votre commande ou de votre compte", "carrying out your order or account"),
        LegalBasis::LegalObligation => lang.t("une obligation légale", "a legal obligation"),
        LegalBasis::LegitimateInterest => lang.t("notre intérêt légitime (vous pouvez vous y opposer)", "our legitimate interest (you may object)"),
    }
}

fn days(lang: Lang, d: u32) -> String {
    match (lang, d) {
        (Lang::Fr, d) if d % 365 == 0 => format!("{} an(s)", d / 365),
        (Lang::En, d) if d % 365 == 0 => format!("{} year(s)", d / 365),
        (Lang::Fr, d) => format!("{d} jours"),
        (Lang::En, d) => format!("{d} days"),
    }
}

async fn dashboard(app: &App, lang: Lang, s: &PortalSession, cookies: Vec<HeaderValue>) -> Response {
    let (profile, state) = match (app.profile(s.profile).await, app.subject_state(s.profile).await) {
        (Ok(p), Ok(st)) => (p, st),
        (Err(e), _) | (_, Err(e)) => return unavailable(app, lang, e),
    };
    if let Err(e) = app.audit("subject:privacy-centre", "privacy_centre.viewed", Some(s.profile), serde_json::json!({})).await {
        return unavailable(app, lang, e);
    }
    let policy = app.policy();
    let config = policy.config();
    let name = |t: &confidant_core::privacy::Text| if lang == Lang::En { t.en.clone() } else { t.fr.clone() };
    let category_name = |key: &str| config.categories.iter().find(|c| c.key == key).map(|c| name(&c.name)).unwrap_or_else(|| key.to_owned());
    let mut sources: Vec<String> = profile.trait_values.iter().map(|t| t.source.clone()).collect();
    sources.sort();
    sources.dedup();
    let correctable: Vec<&str> = ["firstName", "lastName", "phone", "city", "postalCode"].into_iter().filter(|k| policy.trait_category(k).is_some()).collect();
    let token = s.csrf.clone();
    let csrf = app.form_token(&token);
    let body = html! {
        p { (lang.t("Connecté avec l'adresse ", "Signed in as ")) strong { (s.email.as_str()) } }
        form.inline method="post" action="/privacy/signout" {
            (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
            button type="submit" { (lang.t("Se déconnecter", "Sign out")) }
        }

        section aria-labelledby="held" {
            h2 id="held" { (lang.t("Ce que nous détenons", "What we hold")) }
            table {
                caption { (lang.t("Vos informations et leur origine", "Your details and where they came from")) }
                thead { tr { th scope="col" { (lang.t("Donnée", "Item")) } th scope="col" { (lang.t("Valeur", "Value")) } th scope="col" { (lang.t("Catégorie", "Category")) } th scope="col" { (lang.t("Source", "Source")) } } }
                tbody {
                    @for t in &profile.traits {
                        tr {
                            th scope="row" { (t.key) }
                            td { (text_of(&t.value)) }
                            td { (policy.trait_category(&t.key).map(|c| category_name(c)).unwrap_or_default()) }
                            td { (t.source) }
                        }
                    }
                }
            }
            p { (lang.t("Identifiants : ", "Identifiers: "))
                @for (i, id) in profile.identities.iter().enumerate() { @if i > 0 { ", " } (id.kind.as_str()) " " (id.value) } }
            p { (lang.t("Événements enregistrés : ", "Events recorded: ")) (profile.event_count)
                @if let (Some(a), Some(b)) = (profile.first_seen, profile.last_seen) { " (" (format_millis(a).get(..10).unwrap_or("")) " → " (format_millis(b).get(..10).unwrap_or("")) ")" } }
            p { (lang.t("Sources : ", "Sources: ")) (sources.join(", ")) }
        }

        section aria-labelledby="why" {
            h2 id="why" { (lang.t("Pourquoi, et vos choix", "Why, and your choices")) }
            form method="post" action="/privacy/consent" {
                (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
                @for p in &config.purposes {
                    @let consent = p.legal_basis == LegalBasis::Consent;
                    @let granted = state.decision(&p.id, "").map(|d| d.granted);
                    fieldset {
                        legend { (name(&p.name)) }
                        p { (name(&p.description)) }
                        p.meta {
                            (lang.t("Base légale : ", "Legal basis: ")) (basis(lang, p.legal_basis))
                            " · " (lang.t("Conservation : ", "Kept for: ")) (days(lang, p.retention.days))
                            @if !p.recipients.is_empty() { " · " (lang.t("Destinataires : ", "Recipients: ")) (p.recipients.join(", ")) }
                        }
                        @if consent {
                            input type="hidden" name="shown" value=(p.id);
                            input type="checkbox" id={ "p-" (p.id) } name="granted" value=(p.id) checked[granted == Some(true)];
                            label for={ "p-" (p.id) } { (lang.t("J'accepte", "I agree")) }
                            @if p.id == AD_PURPOSE && !config.advertising_categories.is_empty() {
                                fieldset.categories {
                                    legend { (lang.t("Thèmes de publicité acceptés", "Advertising topics allowed")) }
                                    @for cat in &config.advertising_categories {
                                        @let allowed = state.decision(AD_PURPOSE, cat).is_none_or(|d| d.granted);
                                        span.cat {
                                            input type="hidden" name="shown_category" value=(cat);
                                            input type="checkbox" id={ "c-" (cat) } name="category" value=(cat) checked[allowed];
                                            label for={ "c-" (cat) } { (cat.replace('_', " ")) }
                                        }
                                    }
                                }
                            }
                        } @else if granted == Some(false) {
                            p.meta { (lang.t("Vous vous y êtes opposé(e).", "You have objected to it.")) }
                        }
                    }
                }
                p.meta { (lang.t("Version de l'information : ", "Notice version: ")) (config.notice_version) }
                button type="submit" { (lang.t("Enregistrer mes choix", "Save my choices")) }
            }
            form method="post" action="/privacy/object" {
                (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
                p { (lang.t("Vous pouvez aussi vous opposer aux traitements fondés sur notre intérêt légitime.", "You can also object to the processing based on our legitimate interest.")) }
                button type="submit" { (lang.t("Je m'oppose", "I object")) }
            }
        }

        section aria-labelledby="rights" {
            h2 id="rights" { (lang.t("Vos droits", "Your rights")) }
            form method="post" action="/privacy/export" {
                (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
                button type="submit" { (lang.t("Télécharger mes données (JSON)", "Download my data (JSON)")) }
            }
            @if !correctable.is_empty() {
                form method="post" action="/privacy/rectify" {
                    (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
                    h3 { (lang.t("Corriger mes informations", "Correct my details")) }
                    @for k in &correctable {
                        @let current = profile.traits.iter().find(|t| t.key == *k).map(|t| text_of(&t.value)).unwrap_or_default();
                        label for={ "r-" (k) } { (k) }
                        input id={ "r-" (k) } name={ "t." (k) } value=(current) maxlength="200";
                    }
                    button type="submit" { (lang.t("Corriger", "Correct")) }
                }
            }
            p { a href="/privacy/erase" { (lang.t("Supprimer mon compte et mes données", "Erase my account and my data")) } }
        }
    };
    page(app, lang, StatusCode::OK, lang.t("Vos données personnelles", "Your personal data"), body, cookies)
}

async fn consent(State(app): State<App>, ext: axum::http::Extensions, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, _, s, f) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut purposes = BTreeMap::new();
    for (k, v) in &f {
        if k == "shown" {
            let Some(p) = app.policy().purpose(v) else { return problem(&app, lang, StatusCode::BAD_REQUEST, lang.t("Finalité inconnue.", "Unknown purpose.")) };
            if p.legal_basis != LegalBasis::Consent {
                return problem(&app, lang, StatusCode::BAD_REQUEST, lang.t("Finalité inconnue.", "Unknown purpose."));
            }
            purposes.insert(v.clone(), f.iter().any(|(k2, v2)| k2 == "granted" && v2 == v));
        }
    }
    let mut categories = BTreeMap::new();
    for (k, v) in &f {
        if k == "shown_category" {
            if !app.policy().is_ad_category(v) {
                return problem(&app, lang, StatusCode::BAD_REQUEST, lang.t("Thème inconnu.", "Unknown topic."));
            }
            categories.insert(v.clone(), f.iter().any(|(k2, v2)| k2 == "category" && v2 == v));
        }
    }
    // Only what changed: a receipt per decision the person actually made.
    let state = match app.subject_state(s.profile).await {
        Ok(st) => st,
        Err(e) => return unavailable(&app, lang, e),
    };
    purposes.retain(|p, granted| state.decision(p, "").map(|d| d.granted) != Some(*granted));
    categories.retain(|c, allowed| state.decision(AD_PURPOSE, c).is_none_or(|d| d.granted) != *allowed);
    if purposes.is_empty() && categories.is_empty() {
        return redirect("/privacy", Vec::new());
    }
    let request = ConsentRequest {
        identifiers: vec![s.identifier()],
        purposes,
        advertising_categories: categories,
        method: "privacy_centre".into(),
        notice_version: Some(app.policy().config().notice_version.clone()),
        tc_string: None,
        gpc: false,
        evidence: Evidence { ip: peer(&app, &ext, &headers), user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned) },
        at: confidant_service::now_millis(),
    };
    match app.record_consent(None, request, "subject:privacy-centre").await {
        Ok(_) => redirect("/privacy", Vec::new()),
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn export(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, _, s, _) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req = DsrRequest { identifier: s.identifier(), channel: "privacy_centre".into(), action: DsrAction::Export };
    match app.dsr(req, &s.principal()).await {
        Ok(out) => {
            let json = serde_json::to_vec_pretty(&out.export.unwrap_or(Value::Null)).unwrap_or_default();
            let mut r = json.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"my-data.json\""));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            r
        }
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn rectify(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, _, s, f) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let profile = match app.profile(s.profile).await {
        Ok(p) => p,
        Err(e) => return unavailable(&app, lang, e),
    };
    let mut changes = BTreeMap::new();
    for (k, v) in &f {
        let Some(key) = k.strip_prefix("t.") else { continue };
        let current = profile.traits.iter().find(|t| t.key == key).map(|t| text_of(&t.value)).unwrap_or_default();
        let v = v.trim();
        if v != current {
            changes.insert(key.to_owned(), if v.is_empty() { None } else { Some(Value::String(v.to_owned())) });
        }
    }
    if changes.is_empty() {
        return redirect("/privacy", Vec::new());
    }
    let req = DsrRequest { identifier: s.identifier(), channel: "privacy_centre".into(), action: DsrAction::Rectify { changes } };
    match app.dsr(req, &s.principal()).await {
        Ok(_) => redirect("/privacy", Vec::new()),
        Err(ServiceError::Invalid { .. }) => problem(&app, lang, StatusCode::BAD_REQUEST, lang.t("Cette information ne peut pas être corrigée ici.", "This detail cannot be corrected here.")),
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn object(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, _, s, _) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let purposes: Vec<String> = app.policy().config().purposes.iter().filter(|p| p.legal_basis == LegalBasis::LegitimateInterest).map(|p| p.id.clone()).collect();
    if purposes.is_empty() {
        return redirect("/privacy", Vec::new());
    }
    let req = DsrRequest { identifier: s.identifier(), channel: "privacy_centre".into(), action: DsrAction::Object { purposes, advertising_categories: Vec::new() } };
    match app.dsr(req, &s.principal()).await {
        Ok(_) => redirect("/privacy", Vec::new()),
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn erase_page(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = language(&headers, q.lang.as_deref());
    let s = match session_of(&app, &headers).await {
        Ok(Some((_, s))) => s,
        Ok(None) => return redirect("/privacy", Vec::new()),
        Err(e) => return unavailable(&app, lang, e),
    };
    let csrf = app.form_token(&s.csrf);
    let body = html! {
        p { (lang.t(
            "Votre compte, votre historique et toutes les données qui vous concernent seront supprimés définitivement, ici et chez les partenaires qui les ont reçues. Cette action est irréversible.",
            "Your account, your history and all the data about you will be erased for good, here and at the partners who received it. This cannot be undone.")) }
        form method="post" action="/privacy/erase" {
            (form_token_field(&csrf)) input type="hidden" name="lang" value=(lang.code());
            input type="checkbox" id="confirm" name="confirm" value="yes" required;
            label for="confirm" { (lang.t("Je confirme vouloir tout supprimer", "I confirm I want everything erased")) }
            button type="submit" { (lang.t("Supprimer définitivement", "Erase for good")) }
        }
        p { a href="/privacy" { (lang.t("Annuler", "Cancel")) } }
    };
    page(&app, lang, StatusCode::OK, lang.t("Supprimer mon compte", "Erase my account"), body, Vec::new())
}

async fn erase(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, _, s, f) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if field(&f, "confirm") != Some("yes") {
        return problem(&app, lang, StatusCode::BAD_REQUEST, lang.t("Cochez la case de confirmation pour supprimer votre compte.", "Tick the confirmation box to erase your account."));
    }
    let req = DsrRequest { identifier: s.identifier(), channel: "privacy_centre".into(), action: DsrAction::Erase { suppress: false } };
    match app.dsr(req, &s.principal()).await {
        Ok(_) => {
            let body = html! { p role="status" { (lang.t("Vos données ont été supprimées. Merci de nous avoir fait confiance.", "Your data has been erased. Thank you for your trust.")) } };
            page(&app, lang, StatusCode::OK, lang.t("C'est fait", "Done"), body, vec![clear_cookie(&app, PATH, SESSION)])
        }
        Err(ServiceError::Restricted(_)) => problem(
            &app,
            lang,
            StatusCode::CONFLICT,
            lang.t(
                "Vos données font l'objet d'une limitation et doivent être conservées pour l'instant ; contactez-nous.",
                "Your data is under a restriction and must be kept for now; please contact us.",
            ),
        ),
        Err(e) => unavailable(&app, lang, e),
    }
}

async fn sign_out(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (lang, token, _, _) = match signed_in_form(&app, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match app.portal_sign_out(&token).await {
        Ok(()) => redirect(&format!("/privacy?lang={}", lang.code()), vec![clear_cookie(&app, PATH, SESSION)]),
        Err(e) => unavailable(&app, lang, e),
    }
}
