// The email verification page (GET /verify-email?token=...): on a press of its button,
// sends the link's token to POST /verify-email (through link-page.js) and says how that
// went. Opening the page sends nothing, so a mail scanner that opens the link does not
// use it up.
"use strict";

(function () {
  const INVALID_LINK =
    "This verification link is invalid, used or expired; ask for a new one";
  const form = document.getElementById("verify-form");
  const submit = form.querySelector('button[type="submit"]');
  const { token, show, detailOf, post } = window.linkPage;

  // Whether the link is done with: verified, or refused for good.
  async function send() {
    const response = await post({ token: token });
    if (response === null) {
      return false;
    }
    if (response.status === 204) {
      show("success", "Your email is verified. You can close this page.");
      return true;
    }
    const detail = await detailOf(response);
    if (response.status === 400 || response.status === 422) {
      show("error", typeof detail === "string" ? detail : INVALID_LINK);
      return true;
    }
    show(
      "error",
      `The server could not verify your email (error ${response.status}); ` +
        "try again in a minute."
    );
    return false;
  }

  if (!token) {
    return;
  }
  submit.disabled = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    show("pending", "Verifying your email...");
    submit.disabled = await send();
  });
})();
