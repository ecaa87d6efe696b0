import Testing

@testable import TM

/// Inject/expect tables in the manner of resiprocate's testTransactionFSM: each row is an input at a
/// virtual time, the actions expected back in order, and the state after. A virtual timer list follows
/// the `startTimer`/`cancelTimer` actions, so the table is also checked against the clock:
/// - a `fire` row must come exactly at the deadline the machine asked for;
/// - no row may come after an armed timer's deadline unless that timer's `fire` row came first;
/// - the machine's own `timers` set must equal the virtual list after every row.
protocol ScenarioMachine {
    associatedtype Event
    associatedtype State: Equatable
    var state: State { get }
    var timers: TransactionTimers { get }
    mutating func handle(_ event: Event, now: UInt64) -> TransactionActions
    mutating func timerFired(_ timer: TransactionTimer, now: UInt64) -> TransactionActions
}

struct Row<Machine: ScenarioMachine> {
    enum Input {
        case event(Machine.Event)
        case fire(TransactionTimer)
    }

    let time: UInt64
    let input: Input
    let expected: TransactionActions
    let state: Machine.State
    let location: SourceLocation
}

func at<M: ScenarioMachine>(
    _ time: UInt64, _ event: M.Event, _ expected: TransactionActions, _ state: M.State,
    sourceLocation: SourceLocation = #_sourceLocation
) -> Row<M> {
    Row(time: time, input: .event(event), expected: expected, state: state, location: sourceLocation)
}

func fire<M: ScenarioMachine>(
    _ timer: TransactionTimer, at time: UInt64, _ expected: TransactionActions, _ state: M.State,
    sourceLocation: SourceLocation = #_sourceLocation
) -> Row<M> {
    Row(time: time, input: .fire(timer), expected: expected, state: state, location: sourceLocation)
}

/// Armed timers and their absolute deadlines, as the driver's wheel would hold them.
struct VirtualTimers {
    var deadlines: [TransactionTimer: UInt64] = [:]

    mutating func apply(_ actions: TransactionActions, now: UInt64, at location: SourceLocation) {
        for action in actions {
            switch action {
            case .startTimer(let timer, let milliseconds):
                deadlines[timer] = now + UInt64(milliseconds)
            case .cancelTimer(let timer):
                #expect(deadlines[timer] != nil, "cancelled \(timer), which was not armed", sourceLocation: location)
                deadlines[timer] = nil
            default:
                break
            }
        }
    }

    /// The earliest armed timer (ties broken by timer order, as a wheel's slot would list them).
    var next: (timer: TransactionTimer, deadline: UInt64)? {
        deadlines.min { ($0.value, $0.key.rawValue) < ($1.value, $1.key.rawValue) }.map { ($0.key, $0.value) }
    }

    var set: TransactionTimers {
        var set = TransactionTimers()
        for timer in deadlines.keys { set.insert(timer) }
        return set
    }
}

/// Plays `rows` against `machine` and returns it (and its virtual timers) for further rows or checks.
@discardableResult
func play<M: ScenarioMachine>(
    _ machine: inout M, _ rows: [Row<M>], timers: inout VirtualTimers, clock: inout UInt64
) -> M {
    for row in rows {
        #expect(row.time >= clock, "row goes back in time: \(row.time) < \(clock)", sourceLocation: row.location)
        let actions: TransactionActions
        switch row.input {
        case .event(let event):
            if let next = timers.next {
                #expect(next.deadline > row.time, "Timer \(next.timer) was due at \(next.deadline), before this row",
                        sourceLocation: row.location)
            }
            actions = machine.handle(event, now: row.time)
        case .fire(let timer):
            #expect(timers.deadlines[timer] == row.time,
                    "Timer \(timer) is due at \(timers.deadlines[timer].map(String.init) ?? "never"), not \(row.time)",
                    sourceLocation: row.location)
            if let next = timers.next, next.timer != timer {
                #expect(next.deadline > row.time || (next.deadline == row.time && next.timer.rawValue > timer.rawValue),
                        "Timer \(next.timer) was due at \(next.deadline), before this row",
                        sourceLocation: row.location)
            }
            timers.deadlines[timer] = nil
            actions = machine.timerFired(timer, now: row.time)
        }
        clock = row.time
        #expect(actions == row.expected, sourceLocation: row.location)
        #expect(machine.state == row.state, sourceLocation: row.location)
        timers.apply(actions, now: row.time, at: row.location)
        #expect(machine.timers == timers.set, "machine's armed timers differ from the actions'",
                sourceLocation: row.location)
        if actions.contains(.terminated) {
            #expect(timers.deadlines.isEmpty, "terminated with timers armed", sourceLocation: row.location)
        }
    }
    return machine
}

/// Plays a whole scenario from a fresh machine.
@discardableResult
func play<M: ScenarioMachine>(_ machine: M, _ rows: [Row<M>]) -> M {
    var machine = machine
    var timers = VirtualTimers()
    var clock: UInt64 = 0
    return play(&machine, rows, timers: &timers, clock: &clock)
}

// MARK: - The four machines as scenario machines

enum ClientEvent {
    case start
    case response(Int)
    case cancel
    case transportError
}

enum ServerEvent {
    case request
    case ack
    case response(Int)
    case transportError
}

extension InviteClientTransaction: ScenarioMachine {
    mutating func handle(_ event: ClientEvent, now: UInt64) -> TransactionActions {
        switch event {
        case .start: start(now: now)
        case .response(let code): receivedResponse(code: code, now: now)
        case .cancel: cancel(now: now)
        case .transportError: transportError(now: now)
        }
    }
}

extension NonInviteClientTransaction: ScenarioMachine {
    mutating func handle(_ event: ClientEvent, now: UInt64) -> TransactionActions {
        switch event {
        case .start: start(now: now)
        case .response(let code): receivedResponse(code: code, now: now)
        case .cancel: preconditionFailure("no CANCEL for a non-INVITE client transaction")
        case .transportError: transportError(now: now)
        }
    }
}

extension InviteServerTransaction: ScenarioMachine {
    mutating func handle(_ event: ServerEvent, now: UInt64) -> TransactionActions {
        switch event {
        case .request: receivedRequest(now: now)
        case .ack: receivedAck(now: now)
        case .response(let code): sendResponse(code: code, now: now)
        case .transportError: transportError(now: now)
        }
    }
}

extension NonInviteServerTransaction: ScenarioMachine {
    mutating func handle(_ event: ServerEvent, now: UInt64) -> TransactionActions {
        switch event {
        case .request: receivedRequest(now: now)
        case .ack: preconditionFailure("no ACK for a non-INVITE server transaction")
        case .response(let code): sendResponse(code: code, now: now)
        case .transportError: transportError(now: now)
        }
    }
}

/// Settings as RFC 3261 has them, without the tm timeouts, so tables show the RFC timers alone.
let rfcSettings = TimerSettings(t1: 500, t2: 4000, t4: 5000, finalResponseTimeout: nil, finalResponseInviteTimeout: nil)
