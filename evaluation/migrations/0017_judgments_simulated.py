from django.db import migrations, models


def mark_pilot_aggregations(apps, schema_editor):
    """Judgments aggregated from a study's pilot before this field existed are simulated."""
    Aggregation = apps.get_model("annotation", "Aggregation")
    HumanJudgments = apps.get_model("evaluation", "HumanJudgments")
    pilots = Aggregation.objects.filter(pilot__isnull=False).values("judgments_id")
    HumanJudgments.objects.filter(pk__in=pilots).update(simulated=True)


class Migration(migrations.Migration):
    dependencies = [
        ("evaluation", "0016_baseline_chargrams"),
        ("annotation", "0005_multi_arrangement_and_pilots"),  # Aggregation.pilot
    ]

    operations = [
        migrations.AddField(
            model_name="humanjudgments",
            name="simulated",
            field=models.BooleanField(
                default=False,
                help_text="Simulated participants' judgments (a pilot), not people's.",
            ),
        ),
        migrations.RunPython(mark_pilot_aggregations, migrations.RunPython.noop),
    ]
