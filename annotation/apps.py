from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Human studies"
    default_auto_field = "django.db.models.BigAutoField"
