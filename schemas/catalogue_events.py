"""Event payloads of the measure catalogue, for readers that do not load the aggregate.

Stored topics are `hub.credit.catalogue:Catalogue.<Event>` and never change. The catalogue's
version is its aggregate version: the version of the last `MeasurePut` applied.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid5

from schemas.catalogue import Measure
from schemas.events import EventPayload, register

CATALOGUE_TOPIC = "hub.credit.catalogue:Catalogue"
CATALOGUE_ID = uuid5(NAMESPACE_URL, "urn:credit-hub:measure-catalogue")
"""The one catalogue aggregate's id."""


class CatalogueCreated(EventPayload, kw_only=True):
    pass


class CatalogueMeasurePut(EventPayload, kw_only=True):
    measure: Measure


register(f"{CATALOGUE_TOPIC}.Created", "catalogue.created", CatalogueCreated)
register(f"{CATALOGUE_TOPIC}.MeasurePut", "catalogue.measure_put", CatalogueMeasurePut)
