"""Caption ontologies: caption -> class name, with per-class thresholds and negative captions."""

from ontologies.caption_ontology import CaptionOntology, OntologyClass

__all__ = ["CaptionOntology", "OntologyClass"]
