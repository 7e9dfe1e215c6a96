import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0002_participant_conflicts"),
    ]

    operations = [
        migrations.AddField(
            model_name="study",
            name="completed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="participant",
            name="reserved_item",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="annotation.item",
            ),
        ),
        migrations.AddField(
            model_name="participant",
            name="reserved_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
