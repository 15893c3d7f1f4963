"""The gateways' notification endpoint: POST /payments/webhook/<tenant slug>/<plugin_id>.

No login and no CSRF token: the plugin verifies the provider's signature. The event's work and
its GatewayEvent row commit together, so a redelivered event answers 200 and changes nothing,
and one whose processing failed (rolled back) is processed when the provider sends it again.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError

from headend.db import db
from headend.errors import NotFound, ValidationFailed
from headend.payments import services
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant

log = logging.getLogger(__name__)
blueprint = Blueprint("payments_webhook", __name__)


@blueprint.route("/payments/webhook/<slug>/<plugin_id>", methods=["POST"])
def webhook(slug: str, plugin_id: str):
    session = db.session
    with acting_as(None, actor_name="webhook"):
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.slug == slug,
                                                               Tenant.active.is_(True)))
    if tenant_id is None:
        return jsonify(message="not found"), 404
    body = request.get_data()
    with acting_as(tenant_id, actor_name=f"webhook {plugin_id}"):
        try:
            outcome = services.handle_webhook(session, plugin_id, dict(request.headers), body)
            session.commit()
        except NotFound:
            session.rollback()
            return jsonify(message="not found"), 404
        except ValidationFailed as exc:
            session.rollback()
            return jsonify(message=exc.errors), 400
        except services.GatewayDown as exc:
            session.rollback()
            return jsonify(message=str(exc)), 503
        except IntegrityError:
            # the same event committed by a concurrent delivery first
            session.rollback()
            outcome = "duplicate"
    log.info("webhook %s/%s: %s", slug, plugin_id, outcome)
    return jsonify(outcome=outcome), 200


def register(appbuilder):
    app = current_app._get_current_object()
    app.register_blueprint(blueprint)
    app.extensions["csrf"].exempt(webhook)
