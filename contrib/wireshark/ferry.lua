-- Wireshark dissector for the Ferry wire protocol, version 1 (docs/PROTOCOL.md).
--
-- Install: copy this file to ~/.local/lib/wireshark/plugins/ (or run wireshark/tshark with
-- -X lua_script:ferry.lua). It registers on TCP port 7300 (a preference) and for "Decode As"
-- (tshark: -d tcp.port==PORT,ferry). contrib/wireshark/README.md lists the fields.
--
-- A frame is a u32 length word that counts itself, a 24-byte header (program, version,
-- procedure, type, serial, status: big-endian u32 each) and a payload. Frames are reassembled
-- across TCP segments, and a segment may carry many frames. Protobuf payloads (requests,
-- replies, events, the error body) are decoded by hand against the schema below, a copy of
-- the .proto files (codec/proto, actors/proto, node/proto).

local ferry = Proto("ferry", "Ferry RPC Protocol")

local HEADER_LEN = 28 -- length word + header
local MAX_TRAILER = 4096 -- section 7.6: the most a finish's trailer may carry

---------------------------------------------------------------------------------------------
-- Numbers of the protocol (PROTOCOL.md sections 3, 4, 6.1, 6.2)
---------------------------------------------------------------------------------------------

local TYPE = { CALL = 0, REPLY = 1, MESSAGE = 2, STREAM = 3, STREAM_HOLE = 6, CREDIT = 7, CANCEL = 8 }
local TYPE_NAMES = {
    [0] = "CALL", [1] = "REPLY", [2] = "MESSAGE", [3] = "STREAM",
    [4] = "CALL_WITH_FDS (not Ferry)", [5] = "REPLY_WITH_FDS (not Ferry)",
    [6] = "STREAM_HOLE", [7] = "CREDIT", [8] = "CANCEL",
}
local STATUS = { OK = 0, ERROR = 1, CONTINUE = 2 }
local STATUS_NAMES = { [0] = "OK", [1] = "ERROR", [2] = "CONTINUE" }

local ERROR_CODES = {
    [0] = "ERROR_CODE_UNSPECIFIED",
    [1] = "UNKNOWN_PROGRAM", [2] = "UNKNOWN_VERSION", [3] = "UNKNOWN_PROCEDURE",
    [4] = "BAD_REQUEST", [5] = "NOT_FOUND", [6] = "ALREADY_EXISTS", [7] = "PERMISSION_DENIED",
    [8] = "UNAUTHENTICATED", [9] = "RESOURCE_EXHAUSTED", [10] = "CANCELLED", [11] = "ABORTED",
    [12] = "PROTOCOL_VIOLATION", [13] = "CONNECTION_LOST", [14] = "INTERNAL",
    [15] = "SHUTTING_DOWN", [16] = "DEADLINE_EXCEEDED", [17] = "FAILED_PRECONDITION",
}
local SIDES = { [0] = "SIDE_UNSPECIFIED", [1] = "CLIENT", [2] = "SERVER" }
local LAYERS = { [0] = "LAYER_UNSPECIFIED", [1] = "CONNECTION", [2] = "CALL", [3] = "STREAM", [4] = "APPLICATION" }
local ROLES = { [0] = "ROLE_UNSPECIFIED", [1] = "READ_ONLY", [2] = "READ_WRITE", [3] = "ADMIN" }
local DIRECTIONS = { [0] = "DIRECTION_UNSPECIFIED", [1] = "UPLOAD", [2] = "DOWNLOAD", [3] = "MIGRATE", [4] = "COPY" }
local BOOLS = { [0] = "false", [1] = "true" }

local PROGRAM = {
    KEEPALIVE = 0x6b656570, CONTROL = 0x66727279, TEST = 0x74657374, VOLUME = 0x766f6c75,
    EVENTS = 0x65766e74, ADMIN = 0x61646d6e, AUTH = 0x61757468,
}

-- Each procedure: name, direction, request, REPLY/OK type. Events (MESSAGE/OK frames whose
-- procedure field is the event number) are in `events`.
local PROGRAMS = {
    [PROGRAM.KEEPALIVE] = { name = "keepalive", procs = {
        [1] = { name = "PING" }, [2] = { name = "PONG" } } },
    [PROGRAM.CONTROL] = { name = "control", procs = {
        [1] = { name = "SHUTDOWN", message = "ferry.v1.Shutdown" },
        [2] = { name = "GOAWAY" } } },
    [PROGRAM.TEST] = { name = "test", procs = {
        [1] = { name = "ECHO", dir = "unary", req = "ferry.test.v1.EchoRequest", rep = "ferry.test.v1.EchoReply" },
        [2] = { name = "SLEEP", dir = "unary", req = "ferry.test.v1.SleepRequest", rep = "ferry.test.v1.SleepReply" },
        [3] = { name = "FAIL", dir = "unary", req = "ferry.test.v1.FailRequest", rep = "ferry.test.v1.FailReply" },
        [4] = { name = "SINK", dir = "upload", req = "ferry.test.v1.SinkRequest", rep = "ferry.test.v1.SinkReply" },
        [5] = { name = "SOURCE", dir = "download", req = "ferry.test.v1.SourceRequest", rep = "ferry.test.v1.SourceReply" },
        [6] = { name = "ECHO_STREAM", dir = "both", req = "ferry.test.v1.EchoStreamRequest", rep = "ferry.test.v1.EchoStreamReply" },
        [7] = { name = "TICKS", dir = "unary", req = "ferry.test.v1.TicksRequest", rep = "ferry.test.v1.TicksReply" } },
        events = { [100] = { name = "TICK", message = "ferry.test.v1.Tick" } } },
    [PROGRAM.VOLUME] = { name = "volume", procs = {
        [1] = { name = "CREATE", dir = "unary", req = "ferry.volume.v1.CreateRequest", rep = "ferry.volume.v1.Volume" },
        [2] = { name = "LIST", dir = "unary", req = "ferry.volume.v1.ListRequest", rep = "ferry.volume.v1.ListReply" },
        [3] = { name = "INFO", dir = "unary", req = "ferry.volume.v1.InfoRequest", rep = "ferry.volume.v1.Volume" },
        [4] = { name = "DELETE", dir = "unary", req = "ferry.volume.v1.DeleteRequest", rep = "ferry.volume.v1.DeleteReply" },
        [5] = { name = "UPLOAD", dir = "upload", req = "ferry.volume.v1.UploadRequest", rep = "ferry.volume.v1.UploadReply",
                trailer = "ferry.volume.v1.UploadFinish" },
        [6] = { name = "UPLOAD_STATUS", dir = "unary", req = "ferry.volume.v1.UploadStatusRequest", rep = "ferry.volume.v1.UploadStatusReply" },
        [7] = { name = "DOWNLOAD", dir = "download", req = "ferry.volume.v1.DownloadRequest", rep = "ferry.volume.v1.DownloadReply" },
        [8] = { name = "MIGRATE", dir = "unary", req = "ferry.volume.v1.PeerTransferRequest", rep = "ferry.volume.v1.PeerTransferReply" },
        [9] = { name = "COPY", dir = "unary", req = "ferry.volume.v1.PeerTransferRequest", rep = "ferry.volume.v1.PeerTransferReply" },
        [10] = { name = "LIST_CLUSTER", dir = "unary", req = "ferry.volume.v1.ListClusterRequest", rep = "ferry.volume.v1.ListClusterReply" } },
        events = { [100] = { name = "PROGRESS", message = "ferry.events.v1.Event" } } },
    [PROGRAM.EVENTS] = { name = "events", procs = {
        [1] = { name = "SUBSCRIBE", dir = "unary", req = "ferry.events.v1.SubscribeRequest", rep = "ferry.events.v1.SubscribeReply" } },
        events = { [100] = { name = "EVENT", message = "ferry.events.v1.Event" } } },
    [PROGRAM.ADMIN] = { name = "admin", procs = {
        [1] = { name = "INFO", dir = "unary", req = "ferry.admin.v1.InfoRequest", rep = "ferry.admin.v1.ServerInfo" },
        [2] = { name = "CLIENTS", dir = "unary", req = "ferry.admin.v1.ClientsRequest", rep = "ferry.admin.v1.ClientsReply" },
        [3] = { name = "DISCONNECT", dir = "unary", req = "ferry.admin.v1.DisconnectRequest", rep = "ferry.admin.v1.DisconnectReply" } } },
    [PROGRAM.AUTH] = { name = "auth", procs = {
        [1] = { name = "SCRAM_SHA_256", dir = "both", req = "ferry.auth.v1.ScramStart", rep = "ferry.auth.v1.Authenticated" } } },
}

local PROGRAM_NAMES = {}
for number, program in pairs(PROGRAMS) do PROGRAM_NAMES[number] = program.name end

---------------------------------------------------------------------------------------------
-- Protobuf schema (a copy of the .proto files; field kinds: string, bytes, uint64, int64,
-- uint32, int32, bool, enum, message)
---------------------------------------------------------------------------------------------

local SCHEMA = {
    -- codec/proto/ferry/v1/wire.proto
    ["ferry.v1.ErrorBody"] = { prefix = "ferry.error", fields = {
        { 1, "code", "enum", ERROR_CODES }, { 2, "message", "string" },
        { 3, "side", "enum", SIDES }, { 4, "layer", "enum", LAYERS } } },
    ["ferry.v1.Shutdown"] = { prefix = "ferry.shutdown", fields = {
        { 1, "drain_millis", "uint64" }, { 2, "reason", "string" } } },
    -- actors/proto/ferry/auth/v1/auth.proto
    ["ferry.auth.v1.ScramStart"] = { fields = {} },
    ["ferry.auth.v1.Authenticated"] = { fields = {
        { 1, "identity", "string" }, { 2, "role", "enum", ROLES } } },
    -- actors/proto/ferry/test/v1/test.proto
    ["ferry.test.v1.EchoRequest"] = { fields = { { 1, "payload", "bytes" } } },
    ["ferry.test.v1.EchoReply"] = { fields = { { 1, "payload", "bytes" } } },
    ["ferry.test.v1.SleepRequest"] = { fields = { { 1, "millis", "uint64" } } },
    ["ferry.test.v1.SleepReply"] = { fields = { { 1, "slept_millis", "uint64" } } },
    ["ferry.test.v1.FailRequest"] = { fields = { { 1, "code", "int32" }, { 2, "message", "string" } } },
    ["ferry.test.v1.FailReply"] = { fields = {} },
    ["ferry.test.v1.TicksRequest"] = { fields = { { 1, "count", "uint32" } } },
    ["ferry.test.v1.TicksReply"] = { fields = { { 1, "sent", "uint32" } } },
    ["ferry.test.v1.Tick"] = { fields = { { 1, "n", "uint32" } } },
    ["ferry.test.v1.SinkRequest"] = { fields = { { 1, "stall_after", "uint64" } } },
    ["ferry.test.v1.SinkReply"] = { fields = {
        { 1, "bytes", "uint64" }, { 2, "hole_bytes", "uint64" }, { 3, "checksum", "bytes" } } },
    ["ferry.test.v1.SourceRequest"] = { fields = {
        { 1, "length", "uint64" }, { 2, "data_run", "uint64" }, { 3, "hole_run", "uint64" },
        { 4, "chunk", "uint32" }, { 5, "fail_after", "uint64" } } },
    ["ferry.test.v1.SourceReply"] = { fields = { { 1, "bytes", "uint64" }, { 2, "checksum", "bytes" } } },
    ["ferry.test.v1.EchoStreamRequest"] = { fields = {} },
    ["ferry.test.v1.EchoStreamReply"] = { fields = { { 1, "bytes", "uint64" } } },
    -- node/proto/ferry/admin/v1/admin.proto
    ["ferry.admin.v1.InfoRequest"] = { fields = {} },
    ["ferry.admin.v1.ServerInfo"] = { fields = {
        { 1, "version", "string" }, { 2, "uptime_millis", "uint64" }, { 3, "max_frame", "uint64" },
        { 4, "max_chunk", "uint64" }, { 5, "stream_window", "uint64" },
        { 6, "max_in_flight_calls", "uint64" }, { 7, "max_connections", "uint64" },
        { 8, "connections_open", "uint64" }, { 9, "data_dir", "string" } } },
    ["ferry.admin.v1.ClientsRequest"] = { fields = {} },
    ["ferry.admin.v1.Client"] = { fields = {
        { 1, "id", "uint64" }, { 2, "peer", "string" }, { 3, "since_millis", "int64" },
        { 4, "calls_in_flight", "uint64" }, { 5, "streams_open", "uint64" },
        { 6, "bytes_in", "uint64" }, { 7, "bytes_out", "uint64" } } },
    ["ferry.admin.v1.ClientsReply"] = { fields = { { 1, "clients", "message", "ferry.admin.v1.Client" } } },
    ["ferry.admin.v1.DisconnectRequest"] = { fields = { { 1, "id", "uint64" } } },
    ["ferry.admin.v1.DisconnectReply"] = { fields = {} },
    -- node/proto/ferry/events/v1/events.proto
    ["ferry.events.v1.SubscribeRequest"] = { fields = {} },
    ["ferry.events.v1.SubscribeReply"] = { fields = {} },
    ["ferry.events.v1.Event"] = { fields = {
        { 1, "at_millis", "int64" }, { 2, "dropped_before", "uint64" },
        { 10, "created", "message", "ferry.events.v1.VolumeCreated" },
        { 11, "deleted", "message", "ferry.events.v1.VolumeDeleted" },
        { 12, "uploaded", "message", "ferry.events.v1.VolumeUploaded" },
        { 13, "progress", "message", "ferry.events.v1.TransferProgress" },
        { 14, "finished", "message", "ferry.events.v1.TransferFinished" },
        { 15, "failed", "message", "ferry.events.v1.TransferFailed" },
        { 16, "subscribed", "message", "ferry.events.v1.Subscribed" } } },
    ["ferry.events.v1.Subscribed"] = { fields = {} },
    ["ferry.events.v1.VolumeCreated"] = { fields = { { 1, "name", "string" }, { 2, "size", "uint64" } } },
    ["ferry.events.v1.VolumeDeleted"] = { fields = { { 1, "name", "string" } } },
    ["ferry.events.v1.VolumeUploaded"] = { fields = {
        { 1, "name", "string" }, { 2, "size", "uint64" }, { 3, "checksum", "bytes" } } },
    ["ferry.events.v1.TransferProgress"] = { fields = {
        { 1, "name", "string" }, { 2, "direction", "enum", DIRECTIONS }, { 3, "bytes", "uint64" },
        { 4, "total", "uint64" }, { 5, "peer", "string" } } },
    ["ferry.events.v1.TransferFinished"] = { fields = {
        { 1, "name", "string" }, { 2, "direction", "enum", DIRECTIONS }, { 3, "bytes", "uint64" },
        { 4, "peer", "string" } } },
    ["ferry.events.v1.TransferFailed"] = { fields = {
        { 1, "name", "string" }, { 2, "direction", "enum", DIRECTIONS }, { 3, "bytes", "uint64" },
        { 4, "reason", "string" }, { 5, "peer", "string" } } },
    -- node/proto/ferry/volume/v1/volume.proto
    ["ferry.volume.v1.Volume"] = { fields = {
        { 1, "name", "string" }, { 2, "size", "uint64" }, { 3, "allocated", "uint64" },
        { 4, "checksum", "bytes" }, { 5, "created_millis", "int64" }, { 6, "modified_millis", "int64" } } },
    ["ferry.volume.v1.CreateRequest"] = { fields = { { 1, "name", "string" }, { 2, "size", "uint64" } } },
    ["ferry.volume.v1.ListRequest"] = { fields = {} },
    ["ferry.volume.v1.ListReply"] = { fields = { { 1, "volumes", "message", "ferry.volume.v1.Volume" } } },
    ["ferry.volume.v1.InfoRequest"] = { fields = { { 1, "name", "string" } } },
    ["ferry.volume.v1.DeleteRequest"] = { fields = { { 1, "name", "string" } } },
    ["ferry.volume.v1.DeleteReply"] = { fields = {} },
    ["ferry.volume.v1.UploadRequest"] = { fields = {
        { 1, "name", "string" }, { 2, "expected_size", "uint64" }, { 3, "expected_checksum", "bytes" },
        { 4, "overwrite", "bool" }, { 5, "resume", "bool" }, { 6, "replicas", "uint32" },
        { 7, "replica", "bool" } } },
    ["ferry.volume.v1.UploadFinish"] = { fields = { { 1, "checksum", "bytes" } } },
    ["ferry.volume.v1.UploadReply"] = { fields = {
        { 1, "volume", "message", "ferry.volume.v1.Volume" }, { 2, "resumed_from", "uint64" },
        { 3, "hole_bytes", "uint64" }, { 4, "replicas", "message", "ferry.volume.v1.Replica" } } },
    ["ferry.volume.v1.Replica"] = { fields = {
        { 1, "peer", "string" }, { 2, "volume", "message", "ferry.volume.v1.Volume" } } },
    ["ferry.volume.v1.UploadStatusRequest"] = { fields = { { 1, "name", "string" } } },
    ["ferry.volume.v1.UploadStatusReply"] = { fields = {
        { 1, "exists", "bool" }, { 2, "offset", "uint64" }, { 3, "expected_size", "uint64" },
        { 4, "expected_checksum", "bytes" }, { 5, "updated_millis", "int64" } } },
    ["ferry.volume.v1.DownloadRequest"] = { fields = {
        { 1, "name", "string" }, { 2, "offset", "uint64" }, { 3, "length", "uint64" } } },
    ["ferry.volume.v1.DownloadReply"] = { fields = {
        { 1, "bytes", "uint64" }, { 2, "hole_bytes", "uint64" }, { 3, "checksum", "bytes" } } },
    ["ferry.volume.v1.PeerTransferRequest"] = { fields = {
        { 1, "name", "string" }, { 2, "to_peer", "string" }, { 3, "overwrite", "bool" } } },
    ["ferry.volume.v1.PeerTransferReply"] = { fields = {
        { 1, "volume", "message", "ferry.volume.v1.Volume" }, { 2, "peer", "string" },
        { 3, "bytes_sent", "uint64" }, { 4, "hole_bytes", "uint64" } } },
    ["ferry.volume.v1.ListClusterRequest"] = { fields = {} },
    ["ferry.volume.v1.ListClusterReply"] = { fields = {
        { 1, "nodes", "message", "ferry.volume.v1.NodeVolumes" } } },
    ["ferry.volume.v1.NodeVolumes"] = { fields = {
        { 1, "node", "string" }, { 2, "address", "string" }, { 3, "local", "bool" },
        { 4, "reachable", "bool" }, { 5, "error", "string" },
        { 6, "volumes", "message", "ferry.volume.v1.Volume" } } },
}

---------------------------------------------------------------------------------------------
-- Fields
---------------------------------------------------------------------------------------------

local f = {
    length = ProtoField.uint32("ferry.length", "Length", base.DEC, nil, nil,
        "Size of the whole frame, length word included"),
    program = ProtoField.uint32("ferry.program", "Program", base.HEX, PROGRAM_NAMES),
    program_name = ProtoField.string("ferry.program.name", "Program name"),
    version = ProtoField.uint32("ferry.version", "Version", base.DEC),
    procedure = ProtoField.uint32("ferry.procedure", "Procedure", base.DEC, nil, nil,
        "Procedure number, or the event number of an event (MESSAGE/OK)"),
    procedure_name = ProtoField.string("ferry.procedure.name", "Procedure name"),
    type = ProtoField.uint32("ferry.type", "Type", base.DEC, TYPE_NAMES),
    serial = ProtoField.uint32("ferry.serial", "Serial", base.DEC),
    status = ProtoField.uint32("ferry.status", "Status", base.DEC, STATUS_NAMES),
    payload = ProtoField.bytes("ferry.payload", "Payload"),
    payload_length = ProtoField.uint32("ferry.payload.length", "Payload length", base.DEC),
    message = ProtoField.string("ferry.pb.message", "Protobuf message", base.UNICODE,
        "The protobuf message type the payload decodes as"),
    credit = ProtoField.uint32("ferry.credit", "Credit grant", base.DEC, nil, nil,
        "Bytes added to the sender's allowance on this stream"),
    cost = ProtoField.uint32("ferry.credit_cost", "Credit cost", base.DEC, nil, nil,
        "What this frame costs the sender's credit (the whole frame, header included)"),
    hole_length = ProtoField.uint64("ferry.hole.length", "Hole length", base.DEC),
    hole_flags = ProtoField.uint32("ferry.hole.flags", "Hole flags", base.HEX),
    data_length = ProtoField.uint32("ferry.data.length", "Data length", base.DEC),
    data = ProtoField.bytes("ferry.data", "Data"),
    scram = ProtoField.string("ferry.scram", "SCRAM message"),
    finish = ProtoField.none("ferry.finish", "Stream finish or confirmation"),
    cancel = ProtoField.none("ferry.cancel", "Cancel request"),
    event = ProtoField.string("ferry.event", "Event"),
    direction = ProtoField.string("ferry.direction", "Procedure direction"),
    pb_unknown = ProtoField.bytes("ferry.pb.unknown", "Unknown protobuf field"),
}

-- One field per protobuf message field: ferry.<package>.<message_in_snake_case>.<field>, or
-- the schema's prefix (ferry.error.*, ferry.shutdown.*).
local function snake(name)
    return (name:gsub("(%l)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2"):lower())
end

for full_name, message in pairs(SCHEMA) do
    local package, short = full_name:match("^ferry%.(.-)%.?v1%.(%w+)$")
    if message.prefix == nil then
        message.prefix = "ferry." .. package .. "." .. snake(short)
    end
    message.by_number = {}
    for _, def in ipairs(message.fields) do
        local number, name, kind, extra = def[1], def[2], def[3], def[4]
        local abbr = message.prefix .. "." .. name
        local field
        if kind == "string" then
            field = ProtoField.string(abbr, name)
        elseif kind == "bytes" then
            field = ProtoField.bytes(abbr, name)
        elseif kind == "uint64" then
            field = ProtoField.uint64(abbr, name, base.DEC)
        elseif kind == "int64" then
            field = ProtoField.int64(abbr, name, base.DEC)
        elseif kind == "uint32" then
            field = ProtoField.uint32(abbr, name, base.DEC)
        elseif kind == "int32" then
            field = ProtoField.int32(abbr, name, base.DEC)
        elseif kind == "bool" then
            field = ProtoField.uint8(abbr, name, base.DEC, BOOLS)
        elseif kind == "enum" then
            field = ProtoField.uint32(abbr, name, base.DEC, extra)
        elseif kind == "message" then
            field = ProtoField.none(abbr, name)
        else
            error("ferry.lua: bad schema kind " .. kind)
        end
        local key = full_name .. "." .. name
        f[key] = field
        message.by_number[number] = { name = name, kind = kind, extra = extra, field = field }
    end
end

local proto_fields = {}
for _, field in pairs(f) do proto_fields[#proto_fields + 1] = field end
ferry.fields = proto_fields

local e = {
    framing = ProtoExpert.new("ferry.expert.framing", "Framing error (section 2)",
        expert.group.MALFORMED, expert.severity.ERROR),
    violation = ProtoExpert.new("ferry.expert.violation", "Protocol violation (sections 4, 7, 8)",
        expert.group.PROTOCOL, expert.severity.WARN),
    payload = ProtoExpert.new("ferry.expert.payload", "Payload does not decode",
        expert.group.MALFORMED, expert.severity.WARN),
    error = ProtoExpert.new("ferry.expert.error", "Error reply, abort or GOAWAY",
        expert.group.RESPONSE_CODE, expert.severity.NOTE),
    unknown = ProtoExpert.new("ferry.expert.unknown", "Unknown program or procedure",
        expert.group.UNDECODED, expert.severity.NOTE),
}
ferry.experts = { e.framing, e.violation, e.payload, e.error, e.unknown }

ferry.prefs.tcp_port = Pref.uint("TCP port", 7300, "The TCP port Ferry is decoded on (ferryd's default is 7300)")
ferry.prefs.max_frame = Pref.uint("Maximum frame size", 16 * 1024 * 1024,
    "A length word above this is a framing error (FrameTooLarge); ferryd's default is 16 MiB")
ferry.prefs.decode_protobuf = Pref.bool("Decode protobuf payloads", true,
    "Decode CALL, REPLY and MESSAGE payloads with the schema of the .proto files")

---------------------------------------------------------------------------------------------
-- Protobuf, by hand
---------------------------------------------------------------------------------------------

-- Reads a varint at `offset` of `tvb`, not past `limit`. Returns the value (UInt64), its
-- length in bytes, or nil when the varint is truncated or longer than 10 bytes.
local function read_varint(tvb, offset, limit)
    local value = UInt64(0)
    local shift = 0
    local pos = offset
    while pos < limit and pos - offset < 10 do
        local byte = tvb:range(pos, 1):uint()
        value = value:bor(UInt64(bit32.band(byte, 0x7f)):lshift(shift))
        shift = shift + 7
        pos = pos + 1
        if byte < 0x80 then return value, pos - offset end
    end
    return nil
end

local function small(value)
    -- A UInt64 that fits in 32 bits as a Lua number (else nil).
    if value:higher() == 0 then return value:lower() end
    return nil
end

local decode_message -- forward

local WIRE_TYPES = { [0] = "varint", [1] = "fixed64", [2] = "length-delimited", [5] = "fixed32" }

-- Decodes `tvb[offset, limit)` as the protobuf message `name` into `tree`. Returns a short
-- summary (for the Info column), or nil and an error text.
decode_message = function(tvb, offset, limit, tree, name, pinfo, depth)
    local message = SCHEMA[name]
    local summary = {}
    local values = {}
    local pos = offset
    while pos < limit do
        local tag, tag_len = read_varint(tvb, pos, limit)
        if tag == nil then return nil, "truncated tag" end
        local tag_n = small(tag)
        if tag_n == nil then return nil, "tag too large" end
        local number, wire = bit32.rshift(tag_n, 3), bit32.band(tag_n, 7)
        if number == 0 then return nil, "field number 0" end
        local value_start = pos + tag_len
        local value, value_len, content_start, content_len
        if wire == 0 then
            value, value_len = read_varint(tvb, value_start, limit)
            if value == nil then return nil, "truncated varint" end
        elseif wire == 1 then
            value_len = 8
        elseif wire == 5 then
            value_len = 4
        elseif wire == 2 then
            local n, n_len = read_varint(tvb, value_start, limit)
            if n == nil then return nil, "truncated length" end
            content_len = small(n)
            if content_len == nil then return nil, "length too large" end
            content_start = value_start + n_len
            value_len = n_len + content_len
        else
            return nil, "unsupported wire type " .. wire
        end
        if value_start + value_len > limit then return nil, "field " .. number .. " runs past the payload" end
        local whole = tvb:range(pos, tag_len + value_len)
        local def = message and message.by_number[number]
        local kind = def and def.kind
        local matches = def and ((wire == 0 and (kind == "uint64" or kind == "int64" or kind == "uint32"
                or kind == "int32" or kind == "bool" or kind == "enum"))
            or (wire == 2 and (kind == "string" or kind == "bytes" or kind == "message")))
        if not matches then
            local item = tree:add(f.pb_unknown, whole)
            item:set_text(string.format("field %d (%s)%s", number, WIRE_TYPES[wire],
                def and (" [expected " .. def.kind .. " " .. def.name .. "]") or ""))
        elseif wire == 0 then
            local text
            if kind == "uint64" then
                tree:add(def.field, whole, value)
                text = tostring(value)
            elseif kind == "int64" then
                local signed = Int64(value:lower(), value:higher())
                tree:add(def.field, whole, signed)
                text = tostring(signed)
            elseif kind == "int32" then
                local signed = Int64(value:lower(), value:higher()):tonumber()
                tree:add(def.field, whole, signed)
                text = tostring(signed)
            else
                local n = value:lower() -- uint32, bool and enum values are 32 bits
                tree:add(def.field, whole, n)
                if kind == "enum" then
                    text = (def.extra[n] or ("unknown " .. n))
                elseif kind == "bool" then
                    text = BOOLS[n] or tostring(n)
                else
                    text = tostring(n)
                end
            end
            summary[#summary + 1] = def.name .. "=" .. text
            values[def.name] = text
        else
            local content = content_len > 0 and tvb:range(content_start, content_len) or nil
            if kind == "string" then
                local s = content and content:string(ENC_UTF_8) or ""
                tree:add(def.field, whole, s)
                summary[#summary + 1] = def.name .. "=\"" .. s .. "\""
                values[def.name] = s
            elseif kind == "bytes" then
                if content then
                    tree:add(def.field, content)
                else
                    tree:add(def.field, whole):set_text(def.name .. ": (empty)")
                end
                if content and content_len <= 16 then
                    summary[#summary + 1] = def.name .. "=" .. tostring(content:bytes()):lower()
                else
                    summary[#summary + 1] = def.name .. "=" .. content_len .. " bytes"
                end
            else
                local sub = tree:add(def.field, whole)
                sub:append_text(" (" .. def.extra .. ")")
                if depth > 16 then return nil, "nested too deep" end
                local inner, err = decode_message(tvb, content_start, content_start + content_len,
                    sub, def.extra, pinfo, depth + 1)
                if inner == nil then return nil, err end
                if inner ~= "" then sub:append_text(": " .. inner) end
                summary[#summary + 1] = def.name .. "{" .. inner .. "}"
            end
        end
        pos = value_start + value_len
    end
    return table.concat(summary, " "), values
end

-- Adds the payload `tvb[offset..]` decoded as protobuf `name`. Returns its summary and its
-- top-level values by field name, or nil.
local function add_protobuf(tvb, offset, tree, name, pinfo, label)
    local len = tvb:len() - offset
    local range = len > 0 and tvb:range(offset, len) or tvb:range(0, HEADER_LEN)
    local sub = tree:add(f.message, range, name)
    sub:set_text((label or "Payload") .. ": " .. name)
    if len == 0 then sub:append_text(" (empty: every field at its default)") end
    if not ferry.prefs.decode_protobuf and name ~= "ferry.v1.ErrorBody" then return "" end
    local summary, values = decode_message(tvb, offset, offset + len, sub, name, pinfo, 0)
    if summary == nil then
        sub:add_proto_expert_info(e.payload, "Payload does not decode as " .. name .. ": " .. values)
        return nil
    end
    return summary, values
end

---------------------------------------------------------------------------------------------
-- Frames
---------------------------------------------------------------------------------------------

-- Per packet: the Info column gets one entry per frame.
local info_parts = {}

local function procedure_info(program, procedure, type_, status)
    local p = PROGRAMS[program]
    if p == nil then return nil, nil end
    if type_ == TYPE.MESSAGE and status == STATUS.OK and p.events and p.events[procedure] then
        return p.events[procedure], true
    end
    return p.procs[procedure], false
end

local function dissect_frame(tvb, pinfo, tree)
    local total = tvb:len()
    local length = tvb:range(0, 4):uint()
    local item = tree:add(ferry, tvb:range(0, total))
    item:add(f.length, tvb:range(0, 4))

    if length < HEADER_LEN then
        item:add_proto_expert_info(e.framing,
            "length " .. length .. " < 28 (LengthTooSmall): the stream cannot be trusted after this")
        info_parts[#info_parts + 1] = "framing error: length " .. length
        return
    end
    if total < HEADER_LEN then return end
    local too_large = length > ferry.prefs.max_frame

    local program = tvb:range(4, 4):uint()
    local version = tvb:range(8, 4):uint()
    local procedure = tvb:range(12, 4):uint()
    local type_ = tvb:range(16, 4):uint()
    local serial = tvb:range(20, 4):uint()
    local status = tvb:range(24, 4):uint()

    local p = PROGRAMS[program]
    local proc, is_event = procedure_info(program, procedure, type_, status)
    local program_name = p and p.name or string.format("0x%08x", program)
    local proc_name = proc and proc.name or tostring(procedure)
    local type_name = TYPE_NAMES[type_] or ("type " .. type_)
    local status_name = STATUS_NAMES[status] or ("status " .. status)

    local pi = item:add(f.program, tvb:range(4, 4))
    item:add(f.program_name, tvb:range(4, 4), program_name):set_generated()
    if p == nil then pi:add_proto_expert_info(e.unknown, "Unknown program " .. program_name) end
    item:add(f.version, tvb:range(8, 4))
    local pri = item:add(f.procedure, tvb:range(12, 4))
    if proc then
        pri:append_text(" (" .. proc.name .. (is_event and ", event" or "") .. ")")
        item:add(f.procedure_name, tvb:range(12, 4), proc.name):set_generated()
        if proc.dir then item:add(f.direction, tvb:range(12, 4), proc.dir):set_generated() end
    elseif p then
        pri:add_proto_expert_info(e.unknown, "Unknown procedure " .. procedure .. " of program " .. p.name)
    end
    local ti = item:add(f.type, tvb:range(16, 4))
    item:add(f.serial, tvb:range(20, 4))
    local si = item:add(f.status, tvb:range(24, 4))

    item:append_text(string.format(", %s/%s, %s.%s, serial %d", type_name, status_name,
        program_name, proc_name, serial))
    local info = string.format("%s/%s %s.%s s=%d", type_name, status_name, program_name, proc_name, serial)

    if too_large then
        item:add_proto_expert_info(e.framing, string.format(
            "length %d > maximum frame size %d (FrameTooLarge)", length, ferry.prefs.max_frame))
        info_parts[#info_parts + 1] = info .. " [framing error: frame too large]"
        return
    end
    if TYPE_NAMES[type_] == nil or type_ == 4 or type_ == 5 then
        ti:add_proto_expert_info(e.framing, "Unknown type " .. type_ .. " (UnknownType)")
        info_parts[#info_parts + 1] = info .. " [framing error: unknown type]"
        return
    end
    if STATUS_NAMES[status] == nil then
        si:add_proto_expert_info(e.framing, "Unknown status " .. status .. " (UnknownStatus)")
        info_parts[#info_parts + 1] = info .. " [framing error: unknown status]"
        return
    end

    local payload_len = total - HEADER_LEN
    item:add(f.payload_length, tvb:range(0, 4), payload_len):set_generated()
    local has_payload = payload_len > 0
    local payload = has_payload and tvb:range(HEADER_LEN, payload_len) or nil

    local function violation(text)
        item:add_proto_expert_info(e.violation, text)
        info = info .. " [violation: " .. text .. "]"
    end
    local function error_body(label)
        local summary, values = add_protobuf(tvb, HEADER_LEN, item, "ferry.v1.ErrorBody", pinfo, label)
        local code = ""
        if summary then
            code = values.code or "ERROR_CODE_UNSPECIFIED"
            info = info .. " " .. code .. (values.message and (" \"" .. values.message .. "\"") or "")
        end
        item:add_proto_expert_info(e.error, label .. ": " .. code)
    end

    if type_ == TYPE.CALL then
        if status ~= STATUS.OK then
            violation("CALL must have status OK")
        elseif serial == 0 then
            violation("CALL on serial 0 (answered GOAWAY PROTOCOL_VIOLATION)")
        end
        if proc and proc.req and status == STATUS.OK then
            local s = add_protobuf(tvb, HEADER_LEN, item, proc.req, pinfo, "Request")
            if s and s ~= "" then info = info .. " " .. s end
        elseif has_payload then
            item:add(f.payload, payload)
        end
    elseif type_ == TYPE.REPLY then
        if status == STATUS.OK then
            if proc and proc.rep then
                local s = add_protobuf(tvb, HEADER_LEN, item, proc.rep, pinfo, "Reply")
                if s and s ~= "" then info = info .. " " .. s end
            elseif has_payload then
                item:add(f.payload, payload)
            end
        elseif status == STATUS.ERROR then
            error_body("Error")
        else
            violation("REPLY with status CONTINUE")
            if has_payload then item:add(f.payload, payload) end
        end
    elseif type_ == TYPE.MESSAGE then
        if status == STATUS.ERROR then
            if not (program == PROGRAM.CONTROL and procedure == 2) then
                violation("MESSAGE/ERROR is only GOAWAY")
            end
            error_body(program == PROGRAM.CONTROL and procedure == 2 and "GOAWAY" or "Error")
        elseif status == STATUS.OK then
            if program == PROGRAM.KEEPALIVE then
                if has_payload then violation("keepalive payload must be empty") end
                if serial ~= 0 then violation("keepalive must be on serial 0") end
            elseif program == PROGRAM.CONTROL and procedure == 1 then
                local s = add_protobuf(tvb, HEADER_LEN, item, "ferry.v1.Shutdown", pinfo, "Shutdown")
                if s and s ~= "" then info = info .. " " .. s end
            elseif program == PROGRAM.CONTROL and procedure == 2 then
                violation("GOAWAY must have status ERROR")
            elseif is_event then
                item:add(f.event, tvb:range(12, 4), proc.name):set_generated()
                local s = add_protobuf(tvb, HEADER_LEN, item, proc.message, pinfo, "Event")
                if s and s ~= "" then info = info .. " " .. s end
            elseif has_payload then
                item:add(f.payload, payload)
            end
        else
            violation("MESSAGE with status CONTINUE")
            if has_payload then item:add(f.payload, payload) end
        end
    elseif type_ == TYPE.STREAM then
        if status == STATUS.CONTINUE then
            item:add(f.data_length, tvb:range(0, 4), payload_len):set_generated()
            item:add(f.cost, tvb:range(0, 4), length):set_generated()
            if has_payload then
                if program == PROGRAM.AUTH then
                    item:add(f.scram, payload, payload:string(ENC_UTF_8))
                    info = info .. " \"" .. payload:string(ENC_UTF_8) .. "\""
                else
                    item:add(f.data, payload)
                    info = info .. " data " .. payload_len .. " bytes"
                end
            else
                violation("empty data chunk")
            end
        elseif status == STATUS.OK then
            item:add(f.finish, tvb:range(16, 12))
            info = info .. " (finish/confirmation)"
            -- A finish may carry a trailer (section 7.6) of at most MAX_TRAILER bytes.
            if payload_len > MAX_TRAILER then
                violation("trailer of " .. payload_len .. " bytes, over " .. MAX_TRAILER)
            elseif has_payload and proc and proc.trailer then
                local s = add_protobuf(tvb, HEADER_LEN, item, proc.trailer, pinfo, "Trailer")
                info = info .. " trailer" .. ((s and s ~= "") and (" " .. s) or "")
            elseif has_payload then
                item:add(f.payload, payload)
                info = info .. " trailer " .. payload_len .. " bytes"
            end
        else
            error_body("Abort")
        end
    elseif type_ == TYPE.STREAM_HOLE then
        if status ~= STATUS.CONTINUE then violation("STREAM_HOLE must have status CONTINUE") end
        item:add(f.cost, tvb:range(0, 4), length):set_generated()
        if payload_len == 12 then
            local hole_length = tvb:range(HEADER_LEN, 8):uint64()
            item:add(f.hole_length, tvb:range(HEADER_LEN, 8))
            item:add(f.hole_flags, tvb:range(HEADER_LEN + 8, 4))
            -- Flag bit 0, KEEP: the receiver's base bytes, not zeros (PROTOCOL.md 7.4, 14).
            local what = bit32.band(tvb:range(HEADER_LEN + 8, 4):uint(), 1) == 1 and " keep " or " hole "
            info = info .. what .. tostring(hole_length) .. " bytes"
        else
            violation("hole payload of " .. payload_len .. " bytes, not 12")
            if has_payload then item:add(f.payload, payload) end
        end
    elseif type_ == TYPE.CREDIT then
        if status ~= STATUS.OK then violation("CREDIT must have status OK") end
        if payload_len == 4 then
            item:add(f.credit, tvb:range(HEADER_LEN, 4))
            info = info .. " +" .. tvb:range(HEADER_LEN, 4):uint()
        else
            violation("credit payload of " .. payload_len .. " bytes, not 4")
            if has_payload then item:add(f.payload, payload) end
        end
    elseif type_ == TYPE.CANCEL then
        item:add(f.cancel, tvb:range(16, 12))
        if status ~= STATUS.OK then violation("CANCEL must have status OK") end
        if has_payload then violation("CANCEL must be empty") end
    end
    info_parts[#info_parts + 1] = info
end

local function frame_length(tvb, pinfo, offset)
    local length = tvb:range(offset, 4):uint()
    if length < HEADER_LEN or length > ferry.prefs.max_frame then
        -- A framing error: show the length word and header, then carry on after them (the
        -- peer closes the connection at this point; nothing after it can be trusted).
        return HEADER_LEN
    end
    return length
end

local function dissect_pdu(tvb, pinfo, tree)
    dissect_frame(tvb, pinfo, tree)
    pinfo.cols.protocol = "Ferry"
    pinfo.cols.info = table.concat(info_parts, " | ")
    return tvb:len()
end

function ferry.dissector(tvb, pinfo, tree)
    info_parts = {}
    dissect_tcp_pdus(tvb, tree, 4, frame_length, dissect_pdu, true)
    return tvb:len()
end

local tcp_port = DissectorTable.get("tcp.port")
local registered_port = ferry.prefs.tcp_port
tcp_port:add(registered_port, ferry)
tcp_port:add_for_decode_as(ferry)

function ferry.prefs_changed()
    if registered_port ~= ferry.prefs.tcp_port then
        if registered_port ~= 0 then tcp_port:remove(registered_port, ferry) end
        registered_port = ferry.prefs.tcp_port
        if registered_port ~= 0 then tcp_port:add(registered_port, ferry) end
    end
end
