from django.urls import path

from annotation import archive_views, pilot_views, preview_views, views

app_name = "annotation"

urlpatterns = [
    *pilot_views.urlpatterns,  # a study's pilots (simulated participants)
    *archive_views.urlpatterns,  # archive and delete datasets, models, targets, studies
    *preview_views.urlpatterns,  # a study as its participants see it, recording nothing
    # Researchers
    path("studies/", views.study_list, name="study_list"),
    path("studies/new/", views.study_create, name="study_create"),
    path("studies/propose/", views.study_propose, name="study_propose"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/status/", views.study_status, name="study_status"),
    path("studies/<int:study_id>/aggregate/", views.study_aggregate, name="study_aggregate"),
    path(
        "studies/<int:study_id>/descriptions/",
        views.study_descriptions,
        name="study_descriptions",
    ),
    path(
        "studies/<int:study_id>/participants/<int:participant_id>/exclude/",
        views.participant_exclude,
        name="participant_exclude",
    ),
    path(
        "studies/<int:study_id>/export/<str:what>.<str:fmt>",
        views.study_export,
        name="study_export",
    ),
    # Participants: the study link, then their own participant link
    path("s/<str:token>/", views.study_entry, name="study_entry"),
    path("p/<str:token>/", views.participant_trial, name="participant_trial"),
    path("p/<str:token>/done/", views.participant_done, name="participant_done"),
    path("p/<str:token>/tags/", views.tag_suggest, name="tag_suggest"),
    path(
        "p/<str:token>/stimuli/<int:stimulus_id>/",
        views.participant_stimulus,
        name="participant_stimulus",
    ),
    path(
        "p/<str:token>/stimuli/<int:stimulus_id>/poster.jpg",
        views.participant_poster,
        name="participant_poster",
    ),
]
