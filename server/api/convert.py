"""Records <-> protobuf messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from befriend.server.records import DeviceRecord, IdentityKind, UserRecord
from befriend.v1 import account_pb2, common_pb2

# befriend.core / phonenumbers PhoneNumberType -> proto enum
_PHONE_TYPES = {
    0: common_pb2.PHONE_NUMBER_TYPE_FIXED_LINE,
    1: common_pb2.PHONE_NUMBER_TYPE_MOBILE,
    2: common_pb2.PHONE_NUMBER_TYPE_FIXED_LINE_OR_MOBILE,
}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def profile_to_dict(profile: common_pb2.Profile) -> dict[str, Any]:
    return json_format.MessageToDict(profile, preserving_proto_field_name=True)


def profile_from_dict(data: dict[str, Any]) -> common_pb2.Profile:
    return json_format.ParseDict(data, common_pb2.Profile(), ignore_unknown_fields=True)


def user(record: UserRecord) -> common_pb2.User:
    msg = common_pb2.User(
        name=f"users/{record.id}",
        user_id=record.id,
        display_name=record.display_name,
        region_code=record.region_code,
        time_zone=record.time_zone,
        etag=record.etag,
        create_time=timestamp(record.created_at),
        update_time=timestamp(record.updated_at),
        profile=profile_from_dict(record.profile),
    )
    for ident in record.identities:
        if ident.kind == IdentityKind.PHONE:
            msg.phone_numbers.add(raw=ident.raw, e164=ident.value)
        elif ident.kind == IdentityKind.EMAIL:
            msg.email_addresses.add(raw=ident.raw, normalized=ident.value)
        else:
            kind, _, ident_id = ident.value.partition(":")
            msg.im_ids.add(kind=kind, id=ident_id)
    return msg


def device(record: DeviceRecord) -> account_pb2.Device:
    return account_pb2.Device(
        device_id=record.device_id,
        sim_id=record.sim_id,
        platform=record.platform,
        first_seen_time=timestamp(record.first_seen),
        last_seen_time=timestamp(record.last_seen),
    )
