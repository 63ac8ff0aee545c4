"""Per-protocol shapes of data source connection settings and point addresses.

Validated when configuration is saved (site import, API) and parsed again by the
collectors, so one definition says what a Modbus register or an MQTT topic must look
like. Error messages name the field.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Protocol = Literal["modbus-tcp", "mqtt", "http"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------- Modbus TCP
ModbusDataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"]
REGISTER_COUNT = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
                  "float32": 2, "float64": 4, "bool": 1}


class ModbusConnection(_Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    max_gap: Annotated[int, Field(ge=0, le=100, description="Registers a coalesced read may skip")] = 8
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    retries: Annotated[int, Field(ge=0, le=10)] = 1


# `register` is the Modbus word for the field; pydantic warns only because BaseModel
# once had a method of that name.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class ModbusAddress(_Strict):
    """One value on a Modbus device. Function 1/2 read coils / discrete inputs (type bool),
    3/4 read holding / input registers."""

    unit: Annotated[int, Field(ge=0, le=255, description="Slave / unit id")] = 1
    function: Literal[1, 2, 3, 4] = 3
    register: Annotated[int, Field(ge=0, le=65535)]
    type: ModbusDataType = "uint16"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"

    @model_validator(mode="after")
    def _type_fits_function(self) -> "ModbusAddress":
        if self.function in (1, 2) and self.type != "bool":
            raise ValueError(f"function {self.function} reads bits: type must be 'bool', not {self.type!r}")
        if self.function in (3, 4) and self.type == "bool":
            raise ValueError(f"function {self.function} reads registers: choose a numeric type")
        if self.register + self.count - 1 > 65535:
            raise ValueError("register range runs past 65535")
        return self

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]


# ------------------------------------------------------------------------- MQTT
class MqttTls(_Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MqttConnection(_Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topics: Annotated[list[str], Field(min_length=1)]
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    qos: Literal[0, 1, 2] = 1
    tls: MqttTls | None = None

    @model_validator(mode="after")
    def _topic_filters(self) -> "MqttConnection":
        for i, topic in enumerate(self.topics):
            levels = topic.split("/")
            for j, level in enumerate(levels):
                if "#" in level and (level != "#" or j != len(levels) - 1):
                    raise ValueError(f"topics[{i}]: '#' must be a whole last level in {topic!r}")
                if "+" in level and level != "+":
                    raise ValueError(f"topics[{i}]: '+' must be a whole level in {topic!r}")
            if not topic:
                raise ValueError(f"topics[{i}]: empty topic filter")
        return self


class MqttAddress(_Strict):
    """`key`: the point's name inside JSON payloads (defaults to the point name);
    `topic`: a topic whose plain-number payload is this point's value."""

    key: str | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _topic_is_concrete(self) -> "MqttAddress":
        if self.topic is not None and ("+" in self.topic or "#" in self.topic):
            raise ValueError("topic: a point's own topic cannot contain wildcards")
        return self


# ------------------------------------------------------------------------- HTTP
class HttpConnection(_Strict):
    description: str | None = None


class HttpAddress(_Strict):
    """`key`: the name senders use for this point (defaults to the point name)."""

    key: str | None = None


CONNECTIONS: dict[str, type[_Strict]] = {
    "modbus-tcp": ModbusConnection, "mqtt": MqttConnection, "http": HttpConnection,
}
ADDRESSES: dict[str, type[_Strict]] = {
    "modbus-tcp": ModbusAddress, "mqtt": MqttAddress, "http": HttpAddress,
}


def _messages(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def connection_errors(protocol: str, connection: dict) -> list[str]:
    """Problems with a data source's connection settings, each naming its field."""
    model = CONNECTIONS.get(protocol)
    if model is None:
        return [f"protocol: unknown protocol {protocol!r} (use one of {', '.join(CONNECTIONS)})"]
    try:
        model.model_validate(connection)
    except ValidationError as exc:
        return _messages(exc)
    return []


def address_errors(protocol: str, address: dict) -> list[str]:
    """Problems with a point's address for its data source's protocol."""
    model = ADDRESSES.get(protocol)
    if model is None:
        return [f"protocol: unknown protocol {protocol!r}"]
    try:
        model.model_validate(address)
    except ValidationError as exc:
        return _messages(exc)
    return []


def parse_connection(protocol: str, connection: dict):
    return CONNECTIONS[protocol].model_validate(connection)


def parse_address(protocol: str, address: dict):
    return ADDRESSES[protocol].model_validate(address)
