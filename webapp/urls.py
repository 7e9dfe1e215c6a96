from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("", include("annotation.urls")),
    path("", include("evaluation.urls")),
]
