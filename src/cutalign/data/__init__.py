"""The judgment data layer: canonical examples, loaders, converters, and training views."""
