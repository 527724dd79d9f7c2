import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

# 32 random bytes, URL-safe: 43 characters, far beyond any password validator's demands.
_PASSWORD_BYTES = 32


@transaction.atomic
def api_user_create(*, username: str) -> tuple[AbstractBaseUser, str]:
    """Create an active, non-staff user for an API client, with a generated password.

    Returns the user and the password in clear (shown once; only its hash is stored).
    Raises django.core.exceptions.ValidationError for an invalid or already taken username.
    """
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    user = get_user_model()(username=username, is_active=True, is_staff=False)
    user.set_password(password)
    user.full_clean()
    user.save()
    return user, password
