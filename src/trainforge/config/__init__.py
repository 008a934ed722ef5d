from trainforge.config.loader import dump_config, load_config, parse_overrides, validate
from trainforge.config.schema import RunConfig

__all__ = ["RunConfig", "dump_config", "load_config", "parse_overrides", "validate"]
