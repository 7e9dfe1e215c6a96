from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0003_quotas"),
    ]

    operations = [
        migrations.AddField(
            model_name="study",
            name="require_playback",
            field=models.BooleanField(
                default=False,
                help_text="Audio and video studies: the answer controls stay disabled until "
                "each clip of the trial has played once to its end. Enforced in the "
                "participant's browser only (the server cannot tell whether a clip was played).",
            ),
        ),
    ]
