"""Wire types, config models and the WIT ↔ JSON mapping. Imports no other toolbus package."""
