from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts import selectors, services
from apps.accounts.forms import ProfileForm, TokenForm
from portal.api import current_user
from portal.errors import BinderyError


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("profile")
    return render(request, "accounts/profile.html", {"form": form})


@never_cache
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            # Rendered, not redirected: the secret is shown once and never stored anywhere.
            issued = services.create_api_token(
                current_user(request), form.cleaned_data["name"], expires_at
            )
            form = TokenForm()
        except BinderyError as exc:
            form.add_error(None, exc.message)
    context = {
        "form": form,
        "issued": issued,
        "tokens": selectors.tokens_for_user(current_user(request)),
    }
    return render(request, "accounts/tokens.html", context)


@require_POST
@login_required
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    token = services.revoke_api_token(selectors.get_token_for_user(current_user(request), token_id))
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("tokens")
