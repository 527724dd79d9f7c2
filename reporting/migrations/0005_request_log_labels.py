from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0004_redact_logged_urls"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="labels",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
