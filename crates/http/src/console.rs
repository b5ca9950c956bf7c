//! The console at `/console`: the shop's team signs in with an account (created with an admin
//! key through `POST /api/console/users`) and works from server-rendered pages: a dashboard
//! with SVG charts, customer search and the 360 view (with unmerge), audiences with a size
//! preview, rights requests and their deadlines, the audit log with filters, the register of
//! processing and a retention preview. Each page is open to the roles of the matching API;
//! every view of personal data is audited under the account's name. No script; every form
//! carries the session's token; strict CSP; cookies as in the privacy centre.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::time::format_millis;
use confidant_service::audiences::AudienceInput;
use confidant_service::console::{ConsoleSession, SignInProblem};
use confidant_service::privacy::{DsrAction, DsrRequest};
use confidant_service::ropa::RopaFormat;
use confidant_service::store::privacy::AuditFilter;
use confidant_service::{App, ServiceError};
use maud::{html, Markup, DOCTYPE};
use serde_json::{json, Value};

use crate::admin::authorise;
use crate::error::ApiError;
use crate::web::*;

const PATH: &str = "/console";
const SESSION: &str = "cf_cs";
const PRE: &str = "cf_cpre";
const STYLE: &str = concat!(include_str!("portal.css"), include_str!("console.css"));
/// The console's one script: the live size preview of the audience form.
const SCRIPT: &str = include_str!("console.js");
const CONSOLE_CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const ALL: &[Role] = &[Role::Analyst, Role::Marketer, Role::Admin, Role::Dpo];
const PEOPLE: &[Role] = &[Role::Admin, Role::Dpo];
const AUDIENCE_WRITE: &[Role] = &[Role::Marketer, Role::Admin];

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/console/users", get(users_list).post(users_create))
        .route("/api/console/users/{id}/disable", post(users_disable))
        .route("/console", get(dashboard))
        .route("/console/style.css", get(style))
        .route("/console/console.js", get(script))
        .route("/console/audiences/preview", post(audience_preview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/customers", get(customers))
        .route("/console/customers/{id}", get(customer))
        .route("/console/customers/{id}/unmerge", post(unmerge))
        .route("/console/audiences", get(audiences).post(audiences_post))
        .route("/console/requests", get(requests).post(requests_post))
        .route("/console/audit", get(audit))
        .route("/console/register", get(register))
        .route("/console/retention", get(retention))
}

// ---------------------------------------------------------------------------- the API

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    name: String,
    role: String,
    password: String,
}

async fn users_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let who = authorise(&app, &headers, &[Role::Admin])?;
    if body.len() > MAX_FORM {
        return Err(ApiError::PayloadTooLarge("an account is at most 16 KiB of JSON".into()));
    }
    let u: NewUser = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest { code: "invalid_body", message: "expected {email, name, role, password}".into() })?;
    let user = app.console_create_user(&u.email, &u.name, &u.role, &u.password, &who).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": user.id, "email": user.email, "name": user.name, "role": user.role}))).into_response())
}

async fn users_disable(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, &[Role::Admin])?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest { code: "invalid_user_id", message: "an account id is a number".into() })?;
    app.console_disable_user(id, &who).await?;
    Ok(Json(json!({"disabled": id})))
}

async fn users_list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, &[Role::Admin])?;
    Ok(Json(json!({"users": app.console_users().await?})))
}

// ---------------------------------------------------------------------------- layout

struct Ctx {
    app: App,
    lang: Lang,
    session: ConsoleSession,
    csrf: String,
}

fn layout(app: &App, lang: Lang, status: StatusCode, title: &str, who: Option<(&ConsoleSession, &str)>, body: Markup, cookies: Vec<HeaderValue>) -> Response {
    let shop = app.policy().config().controller.name.clone();
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Confidant" }
                link rel="stylesheet" href="/console/style.css";
                script src="/console/console.js" defer {}
            }
            body.console {
                header {
                    p.shop { "Confidant · " (shop) }
                    @if let Some((s, csrf)) = who {
                        nav aria-label=(lang.t("Navigation principale", "Main navigation")) {
                            a href="/console" { (lang.t("Tableau de bord", "Dashboard")) }
                            @if PEOPLE.contains(&s.role) { a href="/console/customers" { (lang.t("Clients", "Customers")) } }
                            a href="/console/audiences" { (lang.t("Audiences", "Audiences")) }
                            @if PEOPLE.contains(&s.role) {
                                a href="/console/requests" { (lang.t("Demandes", "Requests")) }
                                a href="/console/audit" { (lang.t("Journal", "Audit log")) }
                                a href="/console/register" { (lang.t("Registre", "Register")) }
                                a href="/console/retention" { (lang.t("Conservation", "Retention")) }
                            }
                        }
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span.who { (s.user.name) " (" (s.role.as_str()) ") " }
                            button type="submit" { (lang.t("Se déconnecter", "Sign out")) }
                        }
                    }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    };
    html_page_csp(status, markup.into_string(), cookies, CONSOLE_CSP)
}

fn page(c: &Ctx, title: &str, body: Markup) -> Response {
    layout(&c.app, c.lang, StatusCode::OK, title, Some((&c.session, &c.csrf)), body, Vec::new())
}

fn problem_page(app: &App, lang: Lang, status: StatusCode, message: &str) -> Response {
    let body = html! { p.problem role="alert" { (message) } p { a href="/console" { (lang.t("Retour au tableau de bord", "Back to the dashboard")) } } };
    layout(app, lang, status, lang.t("Action impossible", "This did not work"), None, body, Vec::new())
}

fn failed(c: &Ctx, e: ServiceError) -> Response {
    let (status, msg) = match &e {
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, c.lang.t("Introuvable.", "Not found.").to_owned()),
        ServiceError::Invalid { message, .. } | ServiceError::Conflict(message) | ServiceError::Restricted(message) => (StatusCode::UNPROCESSABLE_ENTITY, message.clone()),
        ServiceError::InvalidRule(err) => (StatusCode::UNPROCESSABLE_ENTITY, err.to_string()),
        _ => {
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "console request failed");
            (StatusCode::SERVICE_UNAVAILABLE, c.lang.t("Service momentanément indisponible.", "The service is unavailable for a moment.").to_owned())
        }
    };
    problem_page(&c.app, c.lang, status, &msg)
}

async fn style() -> Response {
    stylesheet(STYLE)
}

async fn script() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (axum::http::header::CACHE_CONTROL, "public, max-age=3600")], SCRIPT).into_response()
}

/// The signed-in context of a page open to `roles`, or the response that refuses it: the
/// sign-in page without a session, 403 for another role.
async fn ctx(app: &App, headers: &HeaderMap, lang_q: Option<&str>, roles: &[Role]) -> Result<Ctx, Response> {
    let lang = language(headers, lang_q);
    let session = match cookie(headers, SESSION) {
        Some(t) => match app.console_session(&t).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "console session lookup failed");
                return Err(problem_page(app, lang, StatusCode::SERVICE_UNAVAILABLE, lang.t("Service momentanément indisponible.", "The service is unavailable for a moment.")));
            }
        },
        None => None,
    };
    let Some(session) = session else {
        if cookie(headers, SESSION).is_some() {
            // A session cookie that opens nothing: forged, expired, ended or of a disabled account.
            let _ = app.audit("console", "console.session_refused", None, json!({"reason": "unknown_or_expired"})).await;
            return Err(redirect("/console/login", vec![clear_cookie(app, PATH, SESSION)]));
        }
        return Err(redirect("/console/login", Vec::new()));
    };
    if !roles.contains(&session.role) {
        let _ = app.audit(&session.principal().actor(), "console.refused", None, json!({"reason": "role"})).await;
        return Err(problem_page(app, lang, StatusCode::FORBIDDEN, lang.t("Votre rôle ne donne pas accès à cette page.", "Your role does not give access to this page.")));
    }
    let csrf = app.form_token(&format!("console:{}", session.csrf));
    Ok(Ctx { app: app.clone(), lang, session, csrf })
}

/// A signed-in POST: the context and the checked form.
async fn post_ctx(app: &App, headers: &HeaderMap, body: &Bytes, roles: &[Role]) -> Result<(Ctx, Vec<(String, String)>), Response> {
    let Some(f) = form(body) else { return Err(problem_page(app, language(headers, None), StatusCode::PAYLOAD_TOO_LARGE, "16 KiB")) };
    let c = ctx(app, headers, field(&f, "lang"), roles).await?;
    if !app.form_token_ok(&format!("console:{}", c.session.csrf), field(&f, "csrf").unwrap_or("")) {
        let _ = app.audit(&c.session.principal().actor(), "console.form_refused", None, json!({"reason": "csrf"})).await;
        return Err(problem_page(
            app,
            c.lang,
            StatusCode::FORBIDDEN,
            c.lang.t("Ce formulaire a expiré ou ne vient pas de cette page. Rien n'a été modifié.", "This form has expired or did not come from this page. Nothing was changed."),
        ));
    }
    Ok((c, f))
}

fn day(ms: i64) -> String {
    format_millis(ms).get(..10).unwrap_or("").to_owned()
}

fn minute(ms: i64) -> String {
    format_millis(ms).get(..16).unwrap_or("").replace('T', " ")
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------- sign-in

async fn login_page(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = language(&headers, q.lang.as_deref());
    let (pre, set) = match cookie(&headers, PRE).filter(|v| (20..=64).contains(&v.len())) {
        Some(v) => (v, None),
        None => {
            let v = app.random_token();
            let c = set_cookie(&app, PATH, PRE, &v, None);
            (v, Some(c))
        }
    };
    login_form(&app, lang, &pre, StatusCode::OK, None, set.into_iter().collect())
}

fn login_form(app: &App, lang: Lang, pre: &str, status: StatusCode, message: Option<&str>, cookies: Vec<HeaderValue>) -> Response {
    let body = html! {
        @if let Some(m) = message { p.problem role="alert" { (m) } }
        form method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(app.form_token(&format!("pre:{pre}")));
            label for="email" { (lang.t("Adresse e-mail", "Email address")) }
            input id="email" name="email" type="email" autocomplete="username" required maxlength="254";
            label for="password" { (lang.t("Mot de passe", "Password")) }
            input id="password" name="password" type="password" autocomplete="current-password" required maxlength="256";
            button type="submit" { (lang.t("Se connecter", "Sign in")) }
        }
    };
    layout(app, lang, status, lang.t("Connexion à la console", "Console sign-in"), None, body, cookies)
}

async fn login(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let lang = language(&headers, None);
    let Some(f) = form(&body) else { return problem_page(&app, lang, StatusCode::PAYLOAD_TOO_LARGE, "16 KiB") };
    let pre = cookie(&headers, PRE).unwrap_or_default();
    if pre.is_empty() || !app.form_token_ok(&format!("pre:{pre}"), field(&f, "csrf").unwrap_or("")) {
        let _ = app.audit("console", "console.form_refused", None, json!({"reason": "csrf"})).await;
        return problem_page(&app, lang, StatusCode::FORBIDDEN, lang.t("Ce formulaire a expiré. Rien n'a été modifié ; rechargez la page.", "This form has expired. Nothing was changed; reload the page."));
    }
    match app.console_sign_in(field(&f, "email").unwrap_or(""), field(&f, "password").unwrap_or("")).await {
        Ok(Ok(token)) => {
            let minutes = i64::from(app.config().console.session_minutes);
            redirect("/console", vec![set_cookie(&app, PATH, SESSION, &token, Some(minutes * 60))])
        }
        Ok(Err(SignInProblem::Wrong)) => login_form(&app, lang, &pre, StatusCode::UNAUTHORIZED, Some(lang.t("Adresse ou mot de passe incorrect.", "Wrong email or password.")), Vec::new()),
        Ok(Err(SignInProblem::Locked)) => login_form(
            &app,
            lang,
            &pre,
            StatusCode::TOO_MANY_REQUESTS,
            Some(lang.t("Trop d'essais : ce compte est verrouillé pour quelques minutes.", "Too many attempts: this account is locked for a few minutes.")),
            Vec::new(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "console sign-in failed");
            problem_page(&app, lang, StatusCode::SERVICE_UNAVAILABLE, lang.t("Service momentanément indisponible.", "The service is unavailable for a moment."))
        }
    }
}

async fn logout(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, _) = match post_ctx(&app, &headers, &body, ALL).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(t) = cookie(&headers, SESSION) {
        if let Err(e) = app.console_sign_out(&t).await {
            tracing::error!(error = %e, "console sign-out failed");
        }
    }
    redirect("/console/login", vec![clear_cookie(&app, PATH, SESSION)])
}

// ---------------------------------------------------------------------------- dashboard

/// Bars of values over days, as SVG with a title and a text alternative.
fn bars(title: &str, points: &[(String, u64)]) -> Markup {
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let (w, h) = (600.0, 160.0);
    let bw = if points.is_empty() { w } else { w / points.len() as f64 };
    html! {
        figure {
            svg width="600" height="180" viewBox="0 0 600 180" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg" {
                title id="chart-title" { (title) }
                @for (i, (label, v)) in points.iter().enumerate() {
                    @let bh = (*v as f64 / max) * h;
                    rect x=(format!("{:.1}", i as f64 * bw + 1.0)) y=(format!("{:.1}", h - bh)) width=(format!("{:.1}", (bw - 2.0).max(1.0))) height=(format!("{:.1}", bh)) fill="#1b4d89" {
                        title { (label) ": " (v) }
                    }
                }
                line x1="0" y1="160" x2="600" y2="160" stroke="#555";
                @if let (Some(a), Some(b)) = (points.first(), points.last()) {
                    text x="0" y="176" font-size="12" fill="#333" { (a.0) }
                    text x="600" y="176" font-size="12" fill="#333" text-anchor="end" { (b.0) }
                }
            }
            figcaption { (title) ", max " (max as u64) }
        }
    }
}

async fn dashboard(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), ALL).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = confidant_service::now_millis();
    let since = (now / 86_400_000 - 29) * 86_400_000;
    let loaded = async {
        let counts = app.register_counts().await?;
        let per_day = app.store().events_per_day(since).await?;
        let rates = app.store().consent_rates().await?;
        let open = app.dsr_list(true, 50).await?;
        let minimisation = app.minimisation().await?;
        let quality = app.quality().await?;
        Ok::<_, ServiceError>((counts, per_day, rates, open, minimisation, quality))
    };
    let (counts, per_day, rates, open, minimisation, quality) = match loaded.await {
        Ok(x) => x,
        Err(e) => return failed(&c, e),
    };
    let by_day: BTreeMap<i64, u64> = per_day.into_iter().collect();
    let points: Vec<(String, u64)> = (0..30).map(|i| since / 86_400_000 + i).map(|d| (day(d * 86_400_000), by_day.get(&d).copied().unwrap_or(0))).collect();
    let lang = c.lang;
    let dropped: i64 = minimisation.iter().map(|m| m.count).sum();
    let body = html! {
        section.cards {
            div.card { p.big { (counts.subjects) } p { (lang.t("profils", "profiles")) } }
            div.card { p.big { (counts.events_by_source.values().sum::<u64>()) } p { (lang.t("événements", "events")) } }
            div.card { p.big { (counts.receipts) } p { (lang.t("preuves de consentement", "consent receipts")) } }
            div.card { p.big { (open.len()) } p { (lang.t("demandes ouvertes", "open requests")) } }
            div.card { p.big { (dropped) } p { (lang.t("champs écartés (minimisation)", "fields dropped (minimisation)")) } }
        }
        h2 { (lang.t("Événements par jour (30 jours)", "Events per day (30 days)")) }
        (bars(lang.t("Événements par jour", "Events per day"), &points))
        h2 { (lang.t("Consentement par finalité", "Consent per purpose")) }
        table {
            thead { tr { th scope="col" { (lang.t("Finalité", "Purpose")) } th scope="col" { (lang.t("Accepté", "Granted")) } th scope="col" { (lang.t("Refusé", "Refused")) } th scope="col" { (lang.t("Taux", "Rate")) } } }
            tbody {
                @for (p, g, r) in &rates {
                    @let rate = if g + r == 0 { 0.0 } else { *g as f64 * 100.0 / (*g + *r) as f64 };
                    tr { th scope="row" { (p) } td { (g) } td { (r) } td {
                        svg width="120" height="12" viewBox="0 0 120 12" role="img" aria-label=(format!("{rate:.0} %")) xmlns="http://www.w3.org/2000/svg" {
                            rect x="0" y="0" width="120" height="12" fill="#e2e2e2" {}
                            rect x="0" y="0" width=(format!("{:.1}", rate * 1.2)) height="12" fill="#1b6e3b" {}
                        }
                        " " (format!("{rate:.0} %"))
                    } }
                }
            }
        }
        h2 { (lang.t("Demandes à traiter", "Requests to handle")) }
        @if open.is_empty() { p { (lang.t("Aucune demande ouverte.", "No open request.")) } }
        @else {
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { (lang.t("Type", "Kind")) } th scope="col" { (lang.t("Reçue", "Received")) } th scope="col" { (lang.t("Échéance", "Deadline")) } } }
                tbody { @for d in &open { tr.overdue[d.overdue] { td { (d.id) } td { (d.kind.as_str()) } td { (day(d.requested_at)) } td { (day(d.deadline)) @if d.overdue { " ⚠" } } } } }
            }
        }
        h2 { (lang.t("Qualité des données par source", "Data quality by source")) }
        table {
            thead { tr { th scope="col" { "Source" } th scope="col" { (lang.t("Profils", "Profiles")) } th scope="col" { (lang.t("Événements", "Events")) } th scope="col" { (lang.t("Dernier", "Latest")) }
                th scope="col" { (lang.t("Doublons fusionnés", "Duplicates merged")) } th scope="col" { (lang.t("Lignes en quarantaine", "Rows quarantined")) } th scope="col" { (lang.t("Messages refusés", "Messages refused")) } } }
            tbody { @for q in &quality { tr {
                th scope="row" { (q.source) } td { (q.profiles) } td { (q.events) } td { (q.last_event.map(day).unwrap_or_default()) } td { (q.merges) }
                td { (q.quarantined.values().sum::<u64>()) } td { (q.rejected.values().sum::<u64>()) }
            } } }
        }
    };
    page(&c, lang.t("Tableau de bord", "Dashboard"), body)
}

// ---------------------------------------------------------------------------- customers

#[derive(serde::Deserialize, Default)]
struct SearchQuery {
    q: Option<String>,
    lang: Option<String>,
}

async fn customers(State(app): State<App>, Query(q): Query<SearchQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = c.lang;
    let query = q.q.unwrap_or_default().trim().to_owned();
    let mut found = Vec::new();
    if !query.is_empty() {
        let kinds: &[IdKind] = if query.contains('@') { &[IdKind::Email] } else if query.starts_with('+') { &[IdKind::Phone] } else { &[IdKind::UserId, IdKind::AnonymousId] };
        for k in kinds {
            match app.find_profiles(*k, &query).await {
                Ok(mut v) => found.append(&mut v),
                Err(ServiceError::Invalid { .. }) => {}
                Err(e) => return failed(&c, e),
            }
        }
        if let Err(e) = app.audit(&c.session.principal().actor(), "console.profiles_searched", None, json!({"kinds": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "found": found.len()})).await {
            return failed(&c, e);
        }
    }
    let body = html! {
        form method="get" action="/console/customers" role="search" {
            label for="q" { (lang.t("E-mail, téléphone (+33…), identifiant client ou anonyme", "Email, phone (+33…), customer or anonymous id")) }
            input id="q" name="q" type="search" value=(query) maxlength="254";
            button type="submit" { (lang.t("Chercher", "Search")) }
        }
        @if !query.is_empty() {
            @if found.is_empty() { p { (lang.t("Aucun profil.", "No profile.")) } }
            ul.results { @for p in &found {
                li { a href={ "/console/customers/" (p.id) } { (p.id) } " — "
                    @for (i, id) in p.identities.iter().filter(|i| i.kind != IdKind::AnonymousId).enumerate() { @if i > 0 { ", " } (id.value) } }
            } }
        }
    };
    page(&c, lang.t("Clients", "Customers"), body)
}

async fn customer(State(app): State<App>, Path(id): Path<String>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = c.lang;
    let Ok(id) = ProfileId::parse(&id) else { return problem_page(&app, lang, StatusCode::BAD_REQUEST, lang.t("Identifiant de profil invalide.", "Invalid profile id.")) };
    let loaded = async {
        let p = app.profile(id).await?;
        let events = app.profile_events(p.id, 50, None).await?;
        let merges = app.merges(p.id).await?;
        let state = app.subject_state(p.id).await?;
        let receipts = app.store().receipts(p.id).await?;
        let computed = app.computed_traits(p.id).await?;
        let audiences = app.audiences_of(p.id).await?;
        Ok::<_, ServiceError>((p, events, merges, state, receipts, computed, audiences))
    };
    let (p, events, merges, state, receipts, computed, audiences) = match loaded.await {
        Ok(x) => x,
        Err(e) => return failed(&c, e),
    };
    let recs = app.recommend(Some(p.id), None, 5).await.ok();
    if let Err(e) = app.audit(&c.session.principal().actor(), "console.profile_viewed", Some(p.id), json!({})).await {
        return failed(&c, e);
    }
    let body = html! {
        p.meta { (lang.t("Profil ", "Profile ")) code { (p.id) } " · " (lang.t("créé le ", "created ")) (day(p.created_at))
            @if state.restricted { " · " strong { (lang.t("traitement limité (art. 18)", "processing restricted (Art. 18)")) } } }
        h2 { (lang.t("Identités", "Identities")) }
        table { thead { tr { th scope="col" { (lang.t("Type", "Kind")) } th scope="col" { (lang.t("Valeur", "Value")) } th scope="col" { "Source" } th scope="col" { (lang.t("Vu le", "First seen")) } } }
            tbody { @for i in &p.identities { tr { td { (i.kind.as_str()) } td { (i.value) } td { (i.source) } td { (day(i.created_at)) } } } } }
        h2 { (lang.t("Attributs et leurs sources", "Traits and their sources")) }
        table { thead { tr { th scope="col" { (lang.t("Clé", "Key")) } th scope="col" { (lang.t("Valeur", "Value")) } th scope="col" { "Source" } th scope="col" { (lang.t("Date", "Time")) } } }
            tbody { @for t in &p.traits { tr { td { (t.key) } td { (text_of(&t.value)) } td { (t.source) } td { (minute(t.timestamp)) } } } } }
        h2 { (lang.t("Analyse : RFM, valeur vie client, attrition", "Analysis: RFM, lifetime value, churn")) }
        @if computed.is_empty() { p { (lang.t("Pas encore calculé (POST /api/analytics/run).", "Not computed yet (POST /api/analytics/run).")) } }
        @else { dl { @for t in &computed { dt { (t.key) } dd { (text_of(&t.value)) } } } }
        h2 { (lang.t("Consentement", "Consent")) }
        table { thead { tr { th scope="col" { (lang.t("Finalité", "Purpose")) } th scope="col" { (lang.t("Décision", "Decision")) } th scope="col" { (lang.t("Méthode", "Method")) } th scope="col" { (lang.t("Date", "Time")) } } }
            tbody { @for r in receipts.iter().rev().take(50) { tr { td { (r.purpose) @if !r.scope.is_empty() { " / " (r.scope) } } td { @if r.granted { "✓" } @else { "✗" } } td { (r.method) } td { (minute(r.at)) } } } } }
        h2 { (lang.t("Audiences", "Audiences")) }
        p { @for (i, a) in audiences.iter().enumerate() { @if i > 0 { ", " } (a.0) } @if audiences.is_empty() { "—" } }
        h2 { (lang.t("Recommandations", "Recommendations")) }
        @match &recs {
            Some(r) => { p.meta { (r.reason) } ul { @for i in &r.for_you.items { li { (i.name.clone().unwrap_or_else(|| i.product.clone())) } } } },
            None => { p { "—" } },
        }
        h2 { (lang.t("Fusions", "Merges")) }
        @if merges.is_empty() { p { "—" } }
        table { tbody { @for m in &merges {
            tr { td { (minute(m.at)) } td { (m.rule) } td { code { (m.from) } " → " code { (m.into) } }
                td { @if let Some(u) = m.undone_at { (lang.t("annulée le ", "undone ")) (day(u)) } @else {
                    form.inline method="post" action={ "/console/customers/" (p.id) "/unmerge" } {
                        input type="hidden" name="csrf" value=(c.csrf);
                        input type="hidden" name="merge" value=(m.id);
                        button type="submit" { (lang.t("Défaire", "Unmerge")) }
                    } } }
            }
        } } }
        h2 { (lang.t("Chronologie (50 derniers événements)", "Timeline (latest 50 events)")) }
        ol.timeline { @for e in &events.events {
            @let v: Value = serde_json::from_str(e.body.get()).unwrap_or(Value::Null);
            li { (minute(e.timestamp)) " · " (v["type"].as_str().unwrap_or("")) " " strong { (v["event"].as_str().or(v["name"].as_str()).unwrap_or("")) } }
        } }
    };
    page(&c, lang.t("Vue client 360°", "Customer 360° view"), body)
}

async fn unmerge(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, f) = match post_ctx(&app, &headers, &body, PEOPLE).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(id) = ProfileId::parse(&id) else { return problem_page(&app, c.lang, StatusCode::BAD_REQUEST, "id") };
    let merge = field(&f, "merge").and_then(|m| m.parse::<i64>().ok());
    match app.unmerge(id, merge, &c.session.principal()).await {
        Ok(m) => redirect(&format!("/console/customers/{}", m.into), Vec::new()),
        Err(e) => failed(&c, e),
    }
}

// ---------------------------------------------------------------------------- audiences

async fn audiences(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), ALL).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    audiences_view(&c, None, None, None).await
}

async fn audiences_view(c: &Ctx, form_values: Option<(&str, &str, &str)>, preview: Option<Markup>, status: Option<StatusCode>) -> Response {
    let list = match c.app.audiences().await {
        Ok(l) => l,
        Err(e) => return failed(c, e),
    };
    let lang = c.lang;
    let (name, purpose, rule) = form_values.unwrap_or(("", "", ""));
    let can_write = AUDIENCE_WRITE.contains(&c.session.role);
    let body = html! {
        table { thead { tr { th scope="col" { (lang.t("Nom", "Name")) } th scope="col" { (lang.t("Finalité", "Purpose")) } th scope="col" { (lang.t("Règle", "Rule")) } th scope="col" { (lang.t("Taille", "Size")) } } }
            tbody { @for a in &list { tr { td { (a.name) } td { (a.purpose) } td { code { (a.rule) } } td { (a.size) } } } } }
        h2 { (lang.t("Nouvelle audience", "New audience")) }
        @if let Some(p) = &preview { (p) }
        p.preview id="live-preview" role="status" aria-live="polite" data-people=(lang.t("personnes", "people")) data-match=(lang.t("correspondent", "match"))
            data-excluded=(lang.t("exclues faute de base légale", "left out for want of a legal basis")) {}
        form method="post" action="/console/audiences" {
            input type="hidden" name="csrf" value=(c.csrf);
            label for="name" { (lang.t("Nom (minuscules, chiffres, tirets)", "Name (lower case, digits, dashes)")) }
            input id="name" name="name" value=(name) maxlength="64";
            label for="purpose" { (lang.t("Finalité", "Purpose")) }
            select id="purpose" name="purpose" {
                @for p in c.app.policy().purposes() { option value=(p.id) selected[p.id == purpose] { (p.id) } }
            }
            label for="rule" { (lang.t("Règle", "Rule")) }
            textarea id="rule" name="rule" rows="3" maxlength="4000" { (rule) }
            p.meta { (lang.t("Exemple : ", "Example: ")) code { "did \"Order Completed\" within 90 days and trait.city = \"Lyon\"" } }
            button type="submit" name="action" value="preview" { (lang.t("Aperçu de la taille", "Preview the size")) }
            @if can_write { " " button type="submit" name="action" value="save" { (lang.t("Enregistrer", "Save")) } }
        }
    };
    let mut r = page(c, lang.t("Audiences", "Audiences"), body);
    if let Some(s) = status {
        *r.status_mut() = s;
    }
    r
}

async fn audiences_post(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, f) = match post_ctx(&app, &headers, &body, ALL).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (name, purpose, rule) = (field(&f, "name").unwrap_or("").trim(), field(&f, "purpose").unwrap_or(""), field(&f, "rule").unwrap_or("").trim());
    let lang = c.lang;
    let values = Some((name, purpose, rule));
    if field(&f, "action") == Some("save") {
        if !AUDIENCE_WRITE.contains(&c.session.role) {
            return problem_page(&app, lang, StatusCode::FORBIDDEN, lang.t("Votre rôle ne permet pas d'enregistrer une audience.", "Your role cannot save an audience."));
        }
        let input = AudienceInput { name: name.to_owned(), purpose: purpose.to_owned(), rule: rule.to_owned(), description: None };
        return match app.create_audience(input, &c.session.principal()).await {
            Ok(_) => redirect("/console/audiences", Vec::new()),
            Err(e) => {
                let msg = html! { p.problem role="alert" { (e.to_string()) } };
                audiences_view(&c, values, Some(msg), Some(StatusCode::UNPROCESSABLE_ENTITY)).await
            }
        };
    }
    match app.preview_audience(purpose, rule).await {
        Ok(p) => {
            let msg = html! { p.preview role="status" {
                strong { (p.size) } (lang.t(" personnes (", " people (")) (p.matching) (lang.t(" correspondent, ", " match, ")) (p.not_lawful) (lang.t(" exclues faute de base légale)", " left out for want of a legal basis)"))
            } };
            audiences_view(&c, values, Some(msg), None).await
        }
        Err(e) => {
            let msg = html! { p.problem role="alert" { (e.to_string()) } };
            audiences_view(&c, values, Some(msg), Some(StatusCode::UNPROCESSABLE_ENTITY)).await
        }
    }
}

// ---------------------------------------------------------------------------- the DPO's pages

async fn requests(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = match app.dsr_list(false, 200).await {
        Ok(l) => l,
        Err(e) => return failed(&c, e),
    };
    if let Err(e) = app.audit(&c.session.principal().actor(), "console.requests_viewed", None, json!({})).await {
        return failed(&c, e);
    }
    let lang = c.lang;
    let body = html! {
        h2 { (lang.t("Traiter une demande reçue", "Handle a request received")) }
        form method="post" action="/console/requests" {
            input type="hidden" name="csrf" value=(c.csrf);
            label for="kind" { (lang.t("Demande", "Request")) }
            select id="kind" name="kind" {
                option value="access" { (lang.t("Accès (export JSON)", "Access (JSON export)")) }
                option value="erasure" { (lang.t("Effacement", "Erasure")) }
                option value="restriction" { (lang.t("Limitation", "Restriction")) }
                option value="lift" { (lang.t("Levée de la limitation", "Lift the restriction")) }
            }
            label for="identifier" { (lang.t("Personne (email:…, user_id:…, phone:+33…)", "Person (email:…, user_id:…, phone:+33…)")) }
            input id="identifier" name="identifier" required maxlength="300";
            button type="submit" { (lang.t("Exécuter", "Carry out")) }
        }
        p.meta { (lang.t("Rectification et opposition : API POST /api/dsr ; le client peut aussi agir depuis l'espace confidentialité.",
                     "Rectification and objection: API POST /api/dsr; customers can also act from the privacy centre.")) }
        h2 { (lang.t("Demandes", "Requests")) }
        table { thead { tr { th scope="col" { "#" } th scope="col" { (lang.t("Type", "Kind")) } th scope="col" { (lang.t("Statut", "Status")) } th scope="col" { (lang.t("Canal", "Channel")) } th scope="col" { (lang.t("Reçue", "Received")) } th scope="col" { (lang.t("Échéance", "Deadline")) } } }
            tbody { @for d in &list { tr.overdue[d.overdue] { td { (d.id) } td { (d.kind.as_str()) } td { (d.status) } td { (d.channel) } td { (minute(d.requested_at)) } td { (day(d.deadline)) } } } } }
    };
    page(&c, lang.t("Demandes des personnes", "Rights requests"), body)
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    subject: Option<String>,
    lang: Option<String>,
}

async fn audit(State(app): State<App>, Query(q): Query<AuditQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = c.lang;
    let nonempty = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let subject = match nonempty(&q.subject) {
        Some(s) => match ProfileId::parse(&s) {
            Ok(p) => Some(p),
            Err(_) => return problem_page(&app, lang, StatusCode::BAD_REQUEST, lang.t("Identifiant de profil invalide.", "Invalid profile id.")),
        },
        None => None,
    };
    let filter = AuditFilter { actor: nonempty(&q.actor), action: nonempty(&q.action), subject, since: None, until: None, before: None, limit: 200 };
    let entries = match app.audit_list(filter).await {
        Ok(e) => e,
        Err(e) => return failed(&c, e),
    };
    if let Err(e) = app.audit(&c.session.principal().actor(), "console.audit_viewed", subject, json!({})).await {
        return failed(&c, e);
    }
    let body = html! {
        form method="get" action="/console/audit" {
            label for="actor" { (lang.t("Acteur", "Actor")) } input id="actor" name="actor" value=(q.actor.clone().unwrap_or_default()) maxlength="200";
            label for="action" { "Action" } input id="action" name="action" value=(q.action.clone().unwrap_or_default()) maxlength="200";
            label for="subject" { (lang.t("Profil", "Profile")) } input id="subject" name="subject" value=(q.subject.clone().unwrap_or_default()) maxlength="16";
            button type="submit" { (lang.t("Filtrer", "Filter")) }
        }
        table { thead { tr { th scope="col" { "#" } th scope="col" { (lang.t("Date", "Time")) } th scope="col" { (lang.t("Acteur", "Actor")) } th scope="col" { "Action" } th scope="col" { (lang.t("Profil", "Profile")) } th scope="col" { (lang.t("Détail", "Detail")) } } }
            tbody { @for e in &entries { tr { td { (e.seq) } td { (minute(e.at)) } td { (e.actor) } td { (e.action) } td { (e.subject.clone().unwrap_or_default()) } td { code { (e.detail.to_string()) } } } } } }
    };
    page(&c, lang.t("Journal d'audit", "Audit log"), body)
}

async fn register(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let md = match app.ropa_rendered(RopaFormat::Markdown).await {
        Ok(m) => m,
        Err(e) => return failed(&c, e),
    };
    let body = html! {
        pre.register { (md) }
    };
    page(&c, c.lang.t("Registre des traitements", "Register of processing"), body)
}

async fn retention(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let c = match ctx(&app, &headers, q.lang.as_deref(), PEOPLE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let report = match app.retention_run(true, &c.session.principal().actor()).await {
        Ok(r) => r,
        Err(e) => return failed(&c, e),
    };
    let lang = c.lang;
    let body = html! {
        p { (lang.t("Aperçu : rien n'est supprimé ici ; la tâche de conservation s'exécute selon [jobs].", "Preview: nothing is deleted here; the retention job runs as [jobs] says.")) }
        dl {
            dt { (lang.t("Profils examinés", "Profiles examined")) } dd { (report.subjects_examined) }
            dt { (lang.t("Profils à effacer", "Profiles to erase")) } dd { (report.subjects_erased) }
            dt { (lang.t("Événements à supprimer", "Events to delete")) } dd { (report.events_deleted) }
        }
        table { thead { tr { th scope="col" { (lang.t("Catégorie", "Category")) } th scope="col" { (lang.t("Événements", "Events")) } } }
            tbody { @for (k, v) in &report.events_by_category { tr { td { (k) } td { (v) } } } } }
    };
    page(&c, lang.t("Conservation", "Retention"), body)
}

async fn requests_post(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, f) = match post_ctx(&app, &headers, &body, PEOPLE).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let lang = c.lang;
    let identifier = match Identifier::parse_tagged(field(&f, "identifier").unwrap_or("").trim(), &app.config().ingest.default_region) {
        Ok(i) => i,
        Err(_) => return problem_page(&app, lang, StatusCode::BAD_REQUEST, lang.t("Identifiant invalide : email:…, user_id:… ou phone:+33….", "Invalid identifier: email:…, user_id:… or phone:+33….")),
    };
    let action = match field(&f, "kind") {
        Some("access") => DsrAction::Export,
        Some("erasure") => DsrAction::Erase { suppress: false },
        Some("restriction") => DsrAction::Restrict { lift: false },
        Some("lift") => DsrAction::Restrict { lift: true },
        _ => return problem_page(&app, lang, StatusCode::BAD_REQUEST, lang.t("Type de demande inconnu.", "Unknown kind of request.")),
    };
    match app.dsr(DsrRequest { identifier, channel: "console".into(), action }, &c.session.principal()).await {
        Ok(out) => match out.export {
            Some(export) => {
                let mut r = serde_json::to_vec_pretty(&export).unwrap_or_default().into_response();
                let h = r.headers_mut();
                h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(axum::http::header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"export.json\""));
                h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            None => {
                let body = html! { p role="status" { (out.message) } p { a href="/console/requests" { (lang.t("Retour aux demandes", "Back to the requests")) } } };
                page(&c, lang.t("Demande traitée", "Request handled"), body)
            }
        },
        Err(e) => failed(&c, e),
    }
}

/// The live preview behind the audience form (JSON; the form's own token).
async fn audience_preview(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, f) = match post_ctx(&app, &headers, &body, ALL).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match app.preview_audience(field(&f, "purpose").unwrap_or(""), field(&f, "rule").unwrap_or("")).await {
        Ok(p) => Json(json!({"size": p.size, "matching": p.matching, "not_lawful": p.not_lawful})).into_response(),
        Err(ServiceError::InvalidRule(e)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "invalid_rule", "message": e.to_string()}))).into_response(),
        Err(ServiceError::Invalid { code, message }) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": code, "message": message}))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audience preview failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "unavailable", "message": "try again"}))).into_response()
        }
    }
}
