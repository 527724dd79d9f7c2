"""The admin login's lock-out (django-axes), for admin logins only.

``AXES_ONLY_ADMIN_SITE`` keeps axes from refusing anything but the admin, yet axes still
records every failed ``authenticate()`` it hears of, an API token login's too, and those
records then lock the admin: failed token logins would lock staff out of ``/admin/``. This
handler records (and resets on) admin logins only; the token endpoint has its own limits
(accounts/throttling.py), so neither locks the other out.
"""

from typing import Any

from axes.handlers.database import AxesDatabaseHandler


class AdminOnlyAxesHandler(AxesDatabaseHandler):
    def user_login_failed(
        self, sender: Any, credentials: dict, request: Any = None, **kwargs: Any
    ) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request, **kwargs)

    def user_logged_in(self, sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)


# The longest user name an account can have; what axes records is cut to it. The admin form
# passes longer names on to authenticate(), and axes's column (255) would refuse them with a 500.
USERNAME_MAX_LENGTH = 150


def admin_login_username(request: Any, credentials: dict | None = None) -> str | None:
    """The user name axes counts an admin login under (AXES_USERNAME_CALLABLE)."""
    if credentials:
        name = credentials.get("username")
    else:
        name = getattr(request, "data", request.POST).get("username")
    return name[:USERNAME_MAX_LENGTH] if isinstance(name, str) else None
