"""Strict marshmallow fields for the REST API, replacing two permissive FAB defaults.

- A relation is written by id only. marshmallow-sqlalchemy's `Related` turns an unknown id or a
  nested object into a brand-new row (bypassing validators and permissions); here an id the
  caller cannot see is "no such ..." under that field. Lookups go through the scoped session, so
  another tenant's id is as unknown as a missing one.
- A decimal is parsed exactly (money.parse_decimal): FAB's Decimal field rounds half-even to the
  column scale before any validator sees it and accepts floats.
"""

from __future__ import annotations

from flask_appbuilder.api.convert import Model2SchemaConverter
from marshmallow import ValidationError, fields
from sqlalchemy import select

from headend.db import ExactDecimal, db
from headend.money import parse_decimal


def _label(model) -> str:
    return model.__tablename__.replace("_", " ")


def _load_by_id(model, value):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValidationError(f"must be the id of a {_label(model)}")
    row = db.session.scalar(select(model).where(model.id == int(value)))
    if row is None:
        raise ValidationError(f"no such {_label(model)}: {value}")
    return row


class RelatedId(fields.Field):
    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.id

    def _deserialize(self, value, attr, data, **kwargs):
        return _load_by_id(self.model, value)


class RelatedIdList(RelatedId):
    def _serialize(self, value, attr, obj, **kwargs):
        return [row.id for row in value or ()]

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError(f"must be a list of {_label(self.model)} ids")
        return [_load_by_id(self.model, v) for v in value]


class ExactDecimalField(fields.Field):
    def __init__(self, places: int, **kwargs):
        super().__init__(**kwargs)
        self.places = places

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_decimal(value, places=self.places, allow_negative=True)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class HeadendSchemaConverter(Model2SchemaConverter):
    def _column2relation(self, datamodel, column, nested=False, parent_schema_name=None):
        if nested:
            return super()._column2relation(datamodel, column, nested, parent_schema_name)
        model = datamodel.get_related_model(column.name)
        if datamodel.is_relation_many_to_one(column.name) or \
                datamodel.is_relation_one_to_one(column.name):
            return RelatedId(model, required=not datamodel.is_nullable(column.name),
                             allow_none=datamodel.is_nullable(column.name))
        return RelatedIdList(model, required=False)

    def _column2field(self, datamodel, column, nested=True, parent_schema_name=None):
        sqla_column = datamodel.list_columns.get(column.name)
        if sqla_column is not None and isinstance(sqla_column.type, ExactDecimal):
            return ExactDecimalField(sqla_column.type.places,
                                     required=not datamodel.is_nullable(column.name),
                                     allow_none=datamodel.is_nullable(column.name))
        return super()._column2field(datamodel, column, nested, parent_schema_name)
