"""Dataverse's error answers: `{"error": {"code": "0x…", "message": "…"}}` with the documented codes.

The code is what a client should branch on (the message is localised in Dataverse); each function
here is one documented error, named after Dataverse's own name for it.
"""

from __future__ import annotations


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str, code: str = "0x80040203") -> DataverseError:
    return DataverseError(400, code, message)


def resource_not_found(segment: str) -> DataverseError:
    return DataverseError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def no_such_property(name: str, type_name: str) -> DataverseError:
    return DataverseError(400, "0x0", f"Could not find a property named '{name}' on type '{type_name}'.")


def undeclared_property(name: str) -> DataverseError:
    return DataverseError(
        400,
        "0x80048d19",
        f"An undeclared property '{name}' which only has property annotations in the payload but no "
        "property value was found in the payload. In OData, only declared navigation properties and "
        "declared named streams can be represented as properties without values.",
    )


def unknown_payload_property(name: str, type_name: str) -> DataverseError:
    return DataverseError(
        400,
        "0x80048d19",
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use property "
        "names that are defined by the type or mark the type as open type.",
    )


def object_does_not_exist(logical: str, row_id: str) -> DataverseError:
    return DataverseError(404, "0x80040217", f"Entity '{logical}' With Id = {row_id} Does Not Exist")


def key_not_found(logical: str) -> DataverseError:
    return DataverseError(
        404, "0x80060891", f"A record with the specified key values does not exist in {logical} entity"
    )


def invalid_key(type_name: str) -> DataverseError:
    return DataverseError(
        400,
        "0x80060888",
        f"The key in the request URI is not valid for resource '{type_name}'. Ensure that the names and "
        "number of key properties match the type and alternate key definitions.",
    )


def duplicate_record() -> DataverseError:
    return DataverseError(412, "0x80040237", "A record with matching key values already exists.")


def duplicate_key(key: str, columns: str) -> DataverseError:
    return DataverseError(
        412,
        "0x80060892",
        f"Entity Key {key} violated. A record with the same value for {columns} already exists. A "
        "duplicate record cannot be created or updated.",
    )


def version_mismatch() -> DataverseError:
    return DataverseError(
        412,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )


def invalid_state(state: object, status: object, logical: str) -> DataverseError:
    return DataverseError(
        400,
        "0x80048408",
        f"{status} is not a valid status code for state code {logical}State.{state}",
    )


def read_only_record() -> DataverseError:
    return DataverseError(400, "0x8004022e", "The object cannot be updated because it is read-only.")


def too_long(column: str, logical: str, limit: int) -> DataverseError:
    return DataverseError(
        400,
        "0x80044331",
        f"A validation error occurred. The length of the '{column}' attribute of the '{logical}' entity "
        f"exceeded the maximum allowed length of '{limit}'.",
    )


def expired_version_stamp() -> DataverseError:
    return DataverseError(
        400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync."
    )


def not_tracked(logical: str) -> DataverseError:
    return DataverseError(400, "0x80072491", f"Entity {logical} isn't enabled for change tracking.")


def unauthorized(base_url: str) -> DataverseError:
    """A missing, expired or wrong-audience token. Dataverse names the token endpoint in
    WWW-Authenticate; its body's code is not documented, so none is given."""
    authority = "https://login.microsoftonline.com/common/oauth2/authorize"
    challenge = f"Bearer authorization_uri={authority}, resource_id={base_url}"
    return DataverseError(
        401, "", "The bearer token is missing or not valid.", {"WWW-Authenticate": challenge}
    )


# Service protection (api-limits): the three throttles, as the Web API reports them with 429.
REQUESTS_EXCEEDED = (
    "0x80072322",
    "Number of requests exceeded the limit of {limit} over time window of {window} seconds.",
)
TIME_EXCEEDED = (
    "0x80072321",
    "Combined execution time of incoming requests exceeded limit of {limit} milliseconds over time window of "
    "{window} seconds. Decrease number of concurrent requests or reduce the duration of requests and try "
    "again later.",
)
CONCURRENCY_EXCEEDED = ("0x80072326", "Number of concurrent requests exceeded the limit of {limit}.")
