import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("annotation", "0001_studies"),
    ]

    operations = [
        migrations.AddField(
            model_name="study",
            name="contact",
            field=models.CharField(
                blank=True,
                help_text="Whom participants contact about a problem (an email address, or how "
                "to reach you); shown when a session cannot be continued. Empty: your "
                "account's email.",
                max_length=200,
            ),
        ),
        migrations.CreateModel(
            name="RefusedResume",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("external_id", models.CharField(max_length=200)),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "participant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="refused_resumes",
                        to="annotation.participant",
                    ),
                ),
            ],
            options={"ordering": ["-at"]},
        ),
    ]
