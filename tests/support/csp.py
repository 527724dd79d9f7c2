"""What a page's Content-Security-Policy refused, as the browser reports it."""

from playwright.sync_api import Page

# Registered before any of the page's own scripts run (init scripts are not subject to CSP).
_LISTEN = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || 'inline'}` +
      ` at ${event.sourceFile}:${event.lineNumber}`
  );
});
"""


class CspWatch:
    """Collects the violations of every page ``page`` loads: the events and console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(_LISTEN)
        page.on("console", self._console)

    def _console(self, message) -> None:  # type: ignore[no-untyped-def]
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    def violations(self) -> list[str]:
        events = self.page.evaluate("window.__cspViolations || []")
        return [*events, *self.console]
