// The password reset page (GET /reset-password?token=...): sends the link's token and the
// new password to POST /reset-password, and says how that went.
//
// It posts to the page's own path, which is where the API answers POST /reset-password:
// behind a proxy that serves the API under a prefix the browser's path has that prefix.
"use strict";

(function () {
  const INVALID_LINK =
    "This reset link is invalid, used or expired; ask for a new one";
  const form = document.getElementById("reset-form");
  const password = document.getElementById("new-password");
  const submit = form.querySelector('button[type="submit"]');
  const status = document.getElementById("status");
  const token = new URLSearchParams(window.location.search).get("token");

  function show(kind, message) {
    status.className = kind;
    status.textContent = message;
  }

  function closeForm() {
    password.value = "";
    password.disabled = true;
    submit.disabled = true;
  }

  // FastAPI's 422: {"detail": [{"loc": ["body", "new_password"], "msg": "..."}]}.
  function invalidInput(detail) {
    if (!Array.isArray(detail)) {
      return null;
    }
    if (detail.some((error) => (error.loc || []).includes("token"))) {
      return INVALID_LINK;
    }
    const messages = detail
      .map((error) => String(error.msg || "").replace(/^Value error, /, ""))
      .filter((message) => message !== "");
    return messages.length > 0 ? messages.join(". ") : null;
  }

  async function detailOf(response) {
    try {
      return (await response.json()).detail;
    } catch {
      return undefined;
    }
  }

  async function send(newPassword) {
    let response;
    try {
      response = await fetch(window.location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ token: token, new_password: newPassword }),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      show(
        "error",
        "Could not reach the server: check your connection and try again."
      );
      return;
    }
    if (response.status === 204) {
      closeForm();
      show(
        "success",
        "Your password is set. Log in with your new password; " +
          "every session signed in with the old one is signed out."
      );
      return;
    }
    const detail = await detailOf(response);
    if (response.status === 400) {
      closeForm();
      show("error", typeof detail === "string" ? detail : INVALID_LINK);
    } else if (response.status === 422) {
      const message = invalidInput(detail) || "The server refused this password.";
      if (message === INVALID_LINK) {
        closeForm();
      }
      show("error", message);
    } else {
      show(
        "error",
        `The server could not set your password (error ${response.status}); ` +
          "try again in a minute."
      );
    }
  }

  if (!token) {
    show(
      "error",
      "This page needs the link from the email, token included: " +
        "open that link again, or ask for a new one."
    );
    return;
  }
  submit.disabled = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    show("pending", "Setting your password...");
    try {
      await send(password.value);
    } finally {
      if (!password.disabled) {
        submit.disabled = false;
      }
    }
  });
})();
