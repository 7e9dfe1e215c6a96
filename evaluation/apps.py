from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Figure kinds register when their modules load (see evaluation.figures).
        from evaluation import compare, figures  # noqa: F401
