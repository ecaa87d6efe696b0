import Engine
import Script

/// Which Ops component an operation or timer belongs to: the shard's handler receives every operation
/// completion and every timer of its shard, and forwards those it recognises here.
public enum OpsComponent: UInt8, Sendable {
    case exec = 1
    case http = 2
    /// `DatabaseRunner`: MariaDB queries.
    case database = 3
    /// `RadiusRunner`: RADIUS Access-/Accounting-Requests.
    case radius = 4
    /// A second `DatabaseRunner` on the shard: sqlops' pool when avpops has its own, so each claims only its
    /// own completions.
    case secondDatabase = 5
    /// aaa_radius' accounting `RadiusRunner` (`.radius` is its authentication one): each claims only its own.
    case radiusAccounting = 6
    /// usrloc's `LocationService`: its sweep of lapsed bindings.
    case location = 7
    /// usrloc's `UsrlocWriter`: its MariaDB pool (db_mode 1–3).
    case locationDatabase = 8
    /// auth_db's `CredentialsService`: its MariaDB pool for subscriber rows.
    case credentials = 9
    /// nathelper's `NatPingService`: its keep-alive interval.
    case natPing = 10
    /// acc's `AccWriter`: its MariaDB pool.
    case accounting = 11
    /// acc's `AccWriter`: its tick (spill flush, replay).
    case accountingTick = 12
    /// dialog's `DialogService`: dialog timeouts and the linger of ended dialogs.
    case dialog = 13
    /// acc's aaa backend: its RADIUS client (`AccRadius`).
    case accountingRadius = 14
    /// dialog's `DialogWriter`: its MariaDB pool (db_mode).
    case dialogDatabase = 15
}

/// How Ops packs its operation ids and timer payloads.
///
/// `OperationID.slot`, high to low: component 8 | operation slot 22 | channel 2; generation = the slot's.
/// Timer payload, high to low: TM 1 (clear) | Ops 1 (set) | reserved 6 (zero) | component 8 | generation 16 |
/// operation slot 32. Component 0 is never issued, so a zeroed id or payload never decodes as ours.
public enum OpsPacking {
    static let channelBits: UInt32 = 2
    static let maximumSlots = 1 << 22

    @inline(__always)
    static func operationID(_ component: OpsComponent, slot: Int, channel: Int, generation: UInt16) -> OperationID {
        OperationID(slot: UInt32(component.rawValue) << 24 | UInt32(slot) << channelBits | UInt32(channel),
                    generation: generation)
    }

    /// The component an operation completion belongs to; nil when it is not Ops'.
    @inline(__always)
    public static func component(of id: OperationID) -> OpsComponent? {
        OpsComponent(rawValue: UInt8(truncatingIfNeeded: id.slot >> 24))
    }

    @inline(__always)
    static func slotAndChannel(of id: OperationID) -> (slot: Int, channel: Int) {
        (Int((id.slot & 0x00FF_FFFF) >> channelBits), Int(id.slot & (1 << channelBits - 1)))
    }

    @inline(__always)
    static func timerPayload(_ component: OpsComponent, slot: Int, generation: UInt16) -> UInt64 {
        TimerPayloadOwner.operations | UInt64(component.rawValue) << 48 | UInt64(generation) << 32 | UInt64(slot)
    }

    /// The component a wheel-timer payload belongs to; nil when it is not Ops' (TM's, a sleep's…).
    @inline(__always)
    public static func component(ofTimer payload: UInt64) -> OpsComponent? {
        guard payload & (TimerPayloadOwner.transactions | TimerPayloadOwner.operations | 0x3F << 56)
            == TimerPayloadOwner.operations else { return nil }
        return OpsComponent(rawValue: UInt8(truncatingIfNeeded: payload >> 48))
    }

    @inline(__always)
    static func slotAndGeneration(ofTimer payload: UInt64) -> (slot: Int, generation: UInt16) {
        (Int(UInt32(truncatingIfNeeded: payload)), UInt16(truncatingIfNeeded: payload >> 32))
    }
}

extension OpsPacking {
    /// A runner's token for an operation a suspension waits on: the ticket in the high half (generation 16 |
    /// slot 16: the slot must be below 2^16), what the service needs back in the low half.
    static func token(_ ticket: AsyncTicket, low: UInt32 = 0) -> UInt64 {
        UInt64(ticket.generation) << 48 | UInt64(ticket.slot & 0xFFFF) << 32 | UInt64(low)
    }

    static func ticket(ofToken token: UInt64) -> AsyncTicket {
        AsyncTicket(slot: UInt32((token >> 32) & 0xFFFF), generation: UInt16(truncatingIfNeeded: token >> 48))
    }
}
