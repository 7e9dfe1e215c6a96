from django.urls import path

from evaluation import figure_views, stimulus_views, views

app_name = "evaluation"

urlpatterns = [
    path("leaderboards/", views.leaderboards, name="leaderboards"),
    path("leaderboards/<int:target_id>/", views.leaderboard, name="leaderboard"),
    path("leaderboards/<int:target_id>/stack/", views.leaderboard_stack, name="leaderboard_stack"),
    path(
        "leaderboards/<int:target_id>/published-ceiling/",
        views.leaderboard_published_ceiling,
        name="leaderboard_published_ceiling",
    ),
    path(
        "leaderboards/<int:target_id>/layer-choice/",
        views.leaderboard_layer_choice,
        name="leaderboard_layer_choice",
    ),
    path(
        "leaderboards/<int:target_id>/rescore/",
        views.leaderboard_rescore,
        name="leaderboard_rescore",
    ),
    path(
        "leaderboards/<int:target_id>/differences/",
        views.target_differences,
        name="target_differences",
    ),
    path("leaderboards/overall/", views.leaderboard_overall, name="leaderboard_overall"),
    path("compare/", views.compare_page, name="compare"),
    path("compare/section/", views.compare_section, name="compare_section"),
    path("compare/pairs.csv", views.compare_pairs_csv, name="compare_pairs_csv"),
    path("figures/<slug:kind>.<slug:fmt>", figure_views.figure_download, name="figure_download"),
    path("models/", views.model_list, name="model_list"),
    path("models/new/", views.model_create, name="model_create"),
    path("models/import-embeddings/", views.embeddings_import_view, name="embeddings_import"),
    path(
        "models/import-embeddings/<int:job_id>/",
        views.embeddings_import_detail,
        name="embeddings_import_detail",
    ),
    path("models/<int:model_id>/", views.model_detail, name="model_detail"),
    path("datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/new/", views.dataset_create, name="dataset_create"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path(
        "datasets/<int:dataset_id>/descriptions/",
        views.descriptions_import_view,
        name="descriptions_import",
    ),
    path("judgments/import/", views.judgments_import_view, name="judgments_import"),
    path("judgments/preview/", views.judgments_preview, name="judgments_preview"),
    path("stimuli/<int:stimulus_id>/file/", views.stimulus_file, name="stimulus_file"),
    path(
        "stimuli/<int:stimulus_id>/poster.jpg",
        stimulus_views.stimulus_poster,
        name="stimulus_poster",
    ),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="run_retry"),
]
