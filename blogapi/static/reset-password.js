// The password reset page (GET /reset-password?token=...): sends the link's token and the
// new password to POST /reset-password (through link-page.js), and says how that went.
"use strict";

(function () {
  const INVALID_LINK =
    "This reset link is invalid, used or expired; ask for a new one";
  const form = document.getElementById("reset-form");
  const password = document.getElementById("new-password");
  const submit = form.querySelector('button[type="submit"]');
  const { token, show, detailOf, post } = window.linkPage;

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

  async function send(newPassword) {
    const response = await post({ token: token, new_password: newPassword });
    if (response === null) {
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
