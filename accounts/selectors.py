from django.contrib.auth.base_user import AbstractBaseUser


def user_greeting(*, user: AbstractBaseUser) -> str:
    """The body of GET /secret for a signed-in caller: exactly ``Hi <username>``."""
    return f"Hi {user.get_username()}"
