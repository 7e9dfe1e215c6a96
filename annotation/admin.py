from django.contrib import admin

from annotation.models import Aggregation, Item, Participant, Response, Study, Tag, Trial


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "dataset", "status", "judgments_per_item", "created_at")
    list_filter = ("kind", "status")


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("pk", "study", "external_id", "status", "started_at", "completed_at")
    list_filter = ("status", "study")
    readonly_fields = ("token", "plan")


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("pk", "trial", "value", "chosen", "rt_ms", "created_at")
    raw_id_fields = ("trial", "chosen")


admin.site.register(Item)
admin.site.register(Trial)
admin.site.register(Tag)
admin.site.register(Aggregation)
