//! What the privacy centre and the console share: the language of a page, cookies, forms,
//! security headers and redirects. No page of its own.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use confidant_service::App;

/// The largest form accepted (413 beyond).
/// The cookie of the language switch (per path).
pub(crate) const LANG: &str = "cf_lang";

pub(crate) const MAX_FORM: usize = 16 * 1024;

pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";


#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Fr,
    En,
}

impl Lang {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }
    pub(crate) fn t<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct LangQuery {
    pub(crate) lang: Option<String>,
}

/// `?lang=` first, then the cookie the switch set, then `Accept-Language`; French otherwise.
pub(crate) fn language(headers: &HeaderMap, query: Option<&str>) -> Lang {
    let pick = |s: &str| match s.trim().get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("en") => Some(Lang::En),
        Some("fr") => Some(Lang::Fr),
        _ => None,
    };
    if let Some(l) = query.and_then(pick) {
        return l;
    }
    if let Some(l) = cookie(headers, LANG).as_deref().and_then(pick) {
        return l;
    }
    if let Some(al) = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()) {
        // The first of fr and en in the list's order of preference (q values descending).
        let mut tags: Vec<(f32, &str)> = al
            .split(',')
            .map(|part| {
                let mut it = part.split(';');
                let tag = it.next().unwrap_or("").trim();
                let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok())).unwrap_or(1.0);
                (q, tag)
            })
            .collect();
        tags.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some(l) = tags.iter().find_map(|(_, t)| pick(t)) {
            return l;
        }
    }
    Lang::Fr
}


pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

pub(crate) fn secure(app: &App) -> bool {
    app.config().server.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

/// A cookie for the pages under `path`: `HttpOnly`, `SameSite=Strict`, `Secure` on https.
pub(crate) fn set_cookie(app: &App, path: &str, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if secure(app) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are base64url")
}

pub(crate) fn clear_cookie(app: &App, path: &str, name: &str) -> HeaderValue {
    set_cookie(app, path, name, "", Some(0))
}

/// Reads a form body (at most 16 KiB) as ordered pairs.
pub(crate) fn form(body: &Bytes) -> Option<Vec<(String, String)>> {
    if body.len() > MAX_FORM {
        return None;
    }
    Some(form_urlencoded::parse(body).into_owned().collect())
}

pub(crate) fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The client's address: the socket's peer, or behind a proxy of `server.trusted_proxies`,
/// the address it forwarded.
pub(crate) fn peer(app: &App, ext: &axum::http::Extensions, headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    Some(confidant_core::config::client_ip(peer, forwarded, &app.config().server.trusted_proxies))
}


/// An HTML page with the headers every page carries.
pub(crate) fn html_page(status: StatusCode, html: String, cookies: Vec<HeaderValue>) -> Response {
    html_page_csp(status, html, cookies, CSP)
}

/// The same with another Content-Security-Policy (the console's allows its own script).
pub(crate) fn html_page_csp(status: StatusCode, html: String, cookies: Vec<HeaderValue>, csp: &'static str) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    r
}

pub(crate) fn redirect(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")))]).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// An embedded stylesheet.
pub(crate) fn stylesheet(css: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], css).into_response()
}
