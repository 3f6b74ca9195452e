// What the pages emailed links open (GET /reset-password, GET /verify-email) share: the
// link's token, the status line, and sending a JSON body to the page's own path, which
// is where the API answers the POST of that path: behind a proxy that serves the API
// under a prefix the browser's path has that prefix.
"use strict";

window.linkPage = (function () {
  const status = document.getElementById("status");

  function show(kind, message) {
    status.className = kind;
    status.textContent = message;
  }

  async function detailOf(response) {
    try {
      return (await response.json()).detail;
    } catch {
      return undefined;
    }
  }

  // The response, or null when the server could not be reached (said on the page).
  async function post(body) {
    try {
      return await fetch(window.location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      show(
        "error",
        "Could not reach the server: check your connection and try again."
      );
      return null;
    }
  }

  const token = new URLSearchParams(window.location.search).get("token");
  if (!token) {
    show(
      "error",
      "This page needs the link from the email, token included: " +
        "open that link again, or ask for a new one."
    );
  }
  return { token, show, detailOf, post };
})();
