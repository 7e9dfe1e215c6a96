from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Human studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Its figure kinds join evaluation.figures.KINDS (pages, downloads and the API).
        from annotation import figures  # noqa: F401
