"""The site's URLs without the ground-truth app's: a site where nothing routes POST /feedback."""

from django.urls import URLResolver

from classifier_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [
    pattern
    for pattern in site_urlpatterns
    if not (isinstance(pattern, URLResolver) and pattern.app_name == "ground_truth")
]
