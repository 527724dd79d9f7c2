"""Staff promote, roll back and archive model versions in the Django admin."""

import pytest

from classification.models import ModelVersion
from tests.support.models import TINY_LABELS

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/classification/modelversion/"


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


@pytest.fixture
def two_versions(register_model, tiny_keras_path):
    first = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    return first, second


def run_action(client, action: str, *versions: ModelVersion):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [v.pk for v in versions]},
        follow=True,
    )


def test_staff_see_the_versions(staff_client, two_versions):
    page = staff_client.get(CHANGELIST).content.decode()
    assert "production" in page and "staging" in page


def test_promote_and_roll_back_from_the_admin(staff_client, two_versions, settings):
    settings.PROMOTION_MIN_SHADOWED = 0  # the gate (ground_truth's tests) lets it through
    first, second = two_versions
    response = run_action(staff_client, "promote", second)
    assert "Tiny v2 is in production" in response.content.decode()  # capitalised by the admin
    assert ModelVersion.objects.get(stage="production") == second
    run_action(staff_client, "promote", first)  # the rollback
    assert ModelVersion.objects.get(stage="production") == first


def test_promoting_two_versions_at_once_is_refused(staff_client, two_versions):
    response = run_action(staff_client, "promote", *two_versions)
    assert "Select exactly one version" in response.content.decode()
    assert ModelVersion.objects.get(stage="production") == two_versions[0]


def test_archive_from_the_admin(staff_client, two_versions):
    run_action(staff_client, "archive", two_versions[1])
    assert ModelVersion.objects.get(pk=two_versions[1].pk).stage == "archived"


def test_versions_are_not_added_or_edited_by_hand(staff_client, two_versions):
    assert staff_client.get(f"{CHANGELIST}add/").status_code == 403
    page = staff_client.get(f"{CHANGELIST}{two_versions[0].pk}/change/").content.decode()
    assert 'name="artifact_sha256"' not in page  # shown read-only, not as an input


def test_other_users_cannot_reach_it(client, django_user_model, two_versions):
    user = django_user_model.objects.create_user("alice", password="pw-alice-123")
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 302  # to the admin login
