/* Confidant consent banner. Embed on the shop's pages:
 *   <script src="https://CONFIDANT/consent/banner.js" data-write-key="WRITE_KEY" async></script>
 * Optional: data-lang="fr|en" (else the page's or the browser's language), data-user-id.
 * It asks for the purposes the shop's configuration bases on consent, with "accept all" and
 * "refuse all" side by side, records the choice through POST /v1/consent (one receipt per
 * purpose, with the notice version), honours Global Privacy Control (the purposes GPC covers
 * are refused and cannot be switched on here), and sets Google Consent Mode v2: every signal
 * denied by default, then updated from the choice. window.Confidant.show() opens it again
 * (for a "cookie settings" link); a "confidant:consent" event announces every choice.
 * No innerHTML: every text is set as text. */
(function () {
  "use strict";
  var CONFIG = /*CONFIG*/null;
  var script = document.currentScript;
  if (!CONFIG || !script) { return; }
  var base = new URL(script.src).origin;
  var writeKey = script.getAttribute("data-write-key") || "";
  var wanted = (script.getAttribute("data-lang") || document.documentElement.lang || navigator.language || "fr").slice(0, 2).toLowerCase();
  var lang = wanted === "en" ? "en" : "fr";
  var T = {
    fr: { title: "Vos choix de confidentialité", intro: "Nous utilisons vos données pour les finalités ci-dessous si vous l'acceptez. Vous pouvez changer d'avis à tout moment.",
          accept: "Tout accepter", refuse: "Tout refuser", customise: "Personnaliser", save: "Enregistrer mes choix", more: "En savoir plus",
          gpc: "Votre navigateur envoie le signal Global Privacy Control : refusé.", legit: "Sans votre accord, sur la base de notre intérêt légitime (vous pouvez vous y opposer) : " },
    en: { title: "Your privacy choices", intro: "We use your data for the purposes below if you agree. You can change your mind at any time.",
          accept: "Accept all", refuse: "Refuse all", customise: "Customise", save: "Save my choices", more: "Learn more",
          gpc: "Your browser sends the Global Privacy Control signal: refused.", legit: "Without your consent, on our legitimate interest (you may object): " }
  }[lang];
  var gpc = navigator.globalPrivacyControl === true;
  var COOKIE = "cf_consent";

  window.dataLayer = window.dataLayer || [];
  function gtag() { window.dataLayer.push(arguments); }
  var signals = Object.keys(CONFIG.google_consent_mode);
  var defaults = { wait_for_update: 500, functionality_storage: "granted", security_storage: "granted" };
  signals.forEach(function (s) { defaults[s] = "denied"; });
  gtag("consent", "default", defaults);

  function readCookie(name) {
    var m = document.cookie.split("; ").filter(function (c) { return c.indexOf(name + "=") === 0; })[0];
    return m ? decodeURIComponent(m.slice(name.length + 1)) : null;
  }
  function writeCookie(name, value, days) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" + days * 86400 + "; SameSite=Lax" + secure;
  }
  function anonymousId() {
    try {
      var ajs = localStorage.getItem("ajs_anonymous_id");
      if (ajs) { return JSON.parse(ajs); }
    } catch (e) { /* storage refused */ }
    var id = readCookie("ajs_anonymous_id") || readCookie("cf_anon");
    if (!id) {
      id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + String(Math.random()).slice(2);
      writeCookie("cf_anon", id, 390);
    }
    return id.replace(/^"|"$/g, "");
  }
  function covered(p) { return gpc && p.gpc; }
  function lawful(purpose, choices) {
    var p = CONFIG.purposes.filter(function (x) { return x.id === purpose; })[0];
    if (p) { return choices[purpose] === true && !covered(p); }
    var li = CONFIG.legitimate.filter(function (x) { return x.id === purpose; })[0];
    return !!li && !(gpc && li.gpc);
  }
  function apply(choices) {
    var update = {};
    signals.forEach(function (s) { update[s] = lawful(CONFIG.google_consent_mode[s], choices) ? "granted" : "denied"; });
    gtag("consent", "update", update);
    try { window.dispatchEvent(new CustomEvent("confidant:consent", { detail: { purposes: choices, gpc: gpc } })); } catch (e) { /* old browsers */ }
  }
  function decide(choices) {
    CONFIG.purposes.forEach(function (p) { if (covered(p)) { choices[p.id] = false; } });
    writeCookie(COOKIE, JSON.stringify({ v: CONFIG.notice_version, c: choices }), 180);
    apply(choices);
    var body = { writeKey: writeKey, anonymousId: anonymousId(), purposes: choices, method: "banner", notice_version: CONFIG.notice_version };
    var userId = script.getAttribute("data-user-id");
    if (userId) { body.userId = userId; }
    var sent = fetch(base + "/v1/consent", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), keepalive: true, credentials: "omit", mode: "cors" });
    window.Confidant.lastPost = sent.then(function (r) { return r.status; }, function () { return 0; });
    close();
  }

  var root = null;
  function el(tag, text, style) {
    var e = document.createElement(tag);
    if (text) { e.textContent = text; }
    if (style) { Object.keys(style).forEach(function (k) { e.style[k] = style[k]; }); }
    return e;
  }
  function button(text, id, primary) {
    var b = el("button", text, { font: "inherit", padding: ".55em 1.1em", margin: ".3em .4em 0 0", borderRadius: "4px", cursor: "pointer",
      border: "2px solid #1b4d89", background: primary ? "#1b4d89" : "#fff", color: primary ? "#fff" : "#1b4d89" });
    b.type = "button";
    b.id = id;
    return b;
  }
  function close() { if (root) { root.remove(); root = null; } }
  function show() {
    close();
    var stored = current();
    root = el("div", null, { position: "fixed", left: "0", right: "0", bottom: "0", zIndex: "2147483647", background: "#fff", color: "#1a1a1a",
      borderTop: "3px solid #1b4d89", padding: "1em 1.5em", font: "16px/1.45 system-ui, sans-serif", boxShadow: "0 -2px 12px rgba(0,0,0,.2)", maxHeight: "80vh", overflowY: "auto" });
    root.id = "confidant-banner";
    root.setAttribute("role", "dialog");
    root.setAttribute("aria-modal", "false");
    root.setAttribute("aria-labelledby", "confidant-title");
    root.setAttribute("lang", lang);
    var h = el("h2", T.title, { fontSize: "1.15em", margin: "0 0 .3em" });
    h.id = "confidant-title";
    root.appendChild(h);
    root.appendChild(el("p", T.intro, { margin: "0 0 .5em" }));
    var list = el("div", null, { display: "none", margin: ".5em 0" });
    var boxes = {};
    CONFIG.purposes.forEach(function (p) {
      var row = el("div", null, { margin: ".4em 0" });
      var box = el("input");
      box.type = "checkbox";
      box.id = "confidant-" + p.id;
      box.value = p.id;
      box.checked = !covered(p) && !!(stored && stored[p.id]);
      box.disabled = covered(p);
      var label = el("label", p.name[lang], { fontWeight: "600", marginLeft: ".4em" });
      label.htmlFor = box.id;
      row.appendChild(box);
      row.appendChild(label);
      row.appendChild(el("div", covered(p) ? T.gpc : p.description[lang], { fontSize: ".9em", color: "#444", marginLeft: "1.6em" }));
      boxes[p.id] = box;
      list.appendChild(row);
    });
    if (CONFIG.legitimate.length) {
      list.appendChild(el("p", T.legit + CONFIG.legitimate.map(function (p) { return p.name[lang]; }).join(", ") + ".", { fontSize: ".9em", color: "#444" }));
    }
    root.appendChild(list);
    var accept = button(T.accept, "confidant-accept", true);
    var refuse = button(T.refuse, "confidant-refuse", true);
    var custom = button(T.customise, "confidant-customise", false);
    var save = button(T.save, "confidant-save", false);
    save.style.display = "none";
    accept.onclick = function () { var c = {}; CONFIG.purposes.forEach(function (p) { c[p.id] = true; }); decide(c); };
    refuse.onclick = function () { var c = {}; CONFIG.purposes.forEach(function (p) { c[p.id] = false; }); decide(c); };
    custom.onclick = function () { list.style.display = "block"; save.style.display = "inline-block"; custom.style.display = "none"; };
    save.onclick = function () { var c = {}; CONFIG.purposes.forEach(function (p) { c[p.id] = boxes[p.id].checked; }); decide(c); };
    [accept, refuse, custom, save].forEach(function (b) { root.appendChild(b); });
    var more = el("a", T.more, { marginLeft: ".6em", color: "#0645ad" });
    more.href = CONFIG.privacy_url;
    root.appendChild(more);
    (document.body || document.documentElement).appendChild(root);
    accept.focus();
  }
  function current() {
    try {
      var s = JSON.parse(readCookie(COOKIE) || "null");
      return s && s.v === CONFIG.notice_version ? s.c : null;
    } catch (e) { return null; }
  }

  window.Confidant = { show: show, choices: current, anonymousId: anonymousId, gpc: gpc };
  var known = current();
  if (known) {
    apply(known);
  } else if (document.body) {
    show();
  } else {
    document.addEventListener("DOMContentLoaded", show);
  }
})();
