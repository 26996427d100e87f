/**
 * pairchat's Socket.IO event contract, for TypeScript frontends (socket.io-client 4.x):
 *
 *     import { io, type Socket } from "socket.io-client";
 *     import type { ClientToServerEvents, ServerToClientEvents } from "./pairchat";
 *     const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url);
 *
 * Every request is an event whose ack is the server's answer: a success, or `{error}` with one
 * of the texts below, in which case the request changed nothing. Narrow a reply by its `error`
 * (`if (reply.error) …`); the refusal's text is then a union of those that request can get,
 * exactly the server's (`pairchat::chat::errors`). `tests/typings.rs` keeps this file and the
 * server in step.
 *
 * Use `emitWithAck` with the `ackTimeout` client option for a timeout:
 * `socket.timeout(ms).emitWithAck(…)` types its reply as `any` in socket.io-client 4.8, and
 * with `ackTimeout` set a callback passed to `emit` is called `(err, reply)`, which these types
 * cannot say.
 */

// ---- error texts ----------------------------------------------------------------------------

/** `code` is missing, or not six digits (a string of six digits, or a number 100000–999999). */
export type InvalidCode = "Invalid room code";
/** No live room has the code (it never existed, was left by everyone, or expired). */
export type RoomNotFound = "Room not found";
/** The room has two members already. */
export type RoomFull = "Room full";
/** The socket is not in the room it names. */
export type NotMember = "Not a member of this room";
/** `text` is missing or not a string. */
export type TextRequired = "Message text must be a string";
/** `text` is blank (as JavaScript's `trim` sees it). */
export type TextEmpty = "Message text is empty";
/** `text` is longer than the server's limit (2000 characters by default). */
export type TextTooLong = "Message text is too long";
/** The server holds `--max-rooms` rooms already, or its output to clients is near its share of
 *  `--max-memory` (slow readers hold it): retry in a moment. */
export type ServerBusy = "Server busy";
/** Too many failed joins lately, from this socket or its address (`--join-failures`); joining
 *  the room one is already in counts too. */
export type TooManyAttempts = "Too many attempts, retry later";
/** Messages sent faster than `--message-rate` (bursts of twice the rate). */
export type RateLimited = "Rate limited";
/** The answer to an event that is not one of {@link ClientToServerEvents} (sent with an ack). */
export type UnknownEvent = "Unknown event";

/** What `createRoom` can be refused with. */
export type CreateRoomError = ServerBusy;
/** What `joinRoom` can be refused with. */
export type JoinRoomError = InvalidCode | RoomNotFound | RoomFull | TooManyAttempts | ServerBusy;
/** What `sendMessage` can be refused with, checked in this order: the code, the room, the
 *  membership, the text, the server's output budget, then the rate (so a refused message
 *  costs no rate-limit token). */
export type SendMessageError =
  | InvalidCode
  | RoomNotFound
  | NotMember
  | TextRequired
  | TextEmpty
  | TextTooLong
  | ServerBusy
  | RateLimited;
/** What `leaveRoom` can be refused with. */
export type LeaveRoomError = InvalidCode | RoomNotFound | NotMember;
/** Why a member that came back after a drop has lost its room (see `roomUnavailable`). */
export type RoomUnavailableError = RoomFull | ServerBusy;
/** Every error text the server sends. */
export type ChatError =
  | CreateRoomError
  | JoinRoomError
  | SendMessageError
  | LeaveRoomError
  | RoomUnavailableError
  | UnknownEvent;

// ---- payloads -------------------------------------------------------------------------------

/** A room code: six digits, such as `"483920"`. */
export type RoomCode = string;

/** A message, as `newMessage` delivers it and `joinRoom` returns the history. */
export interface ChatMessage {
  /** The sender's `socket.id` (compare with your own to tell yours from your partner's). */
  sender: string;
  text: string;
  /** When the server took it, in milliseconds since the Unix epoch. */
  timestamp: number;
}

/** A refused request: nothing changed. */
export interface Refused<E extends ChatError> {
  error: E;
  success?: never;
}

/** A request done (`{success: true}`). */
export interface Done {
  success: true;
  error?: never;
}

/** `createRoom`'s ack: the new room's code (you are its first member), or a refusal. */
export type CreateRoomAck = { code: RoomCode; error?: never } | Refused<CreateRoomError>;
/** `joinRoom`'s ack: the room's history, oldest first, or a refusal. */
export type JoinRoomAck = (Done & { messages: ChatMessage[] }) | Refused<JoinRoomError>;
/** `sendMessage`'s ack (the message itself comes as `newMessage`, to the sender too). */
export type SendMessageAck = Done | Refused<SendMessageError>;
/** `leaveRoom`'s ack. */
export type LeaveRoomAck = Done | Refused<LeaveRoomError>;

// ---- events ---------------------------------------------------------------------------------

/** Requests: each takes a payload and an ack callback (use `emitWithAck`). */
export interface ClientToServerEvents {
  /** A new room with a fresh code; leaves the room you were in (your partner hears
   *  `userLeft`) unless refused. The payload is ignored. */
  createRoom: (payload: Record<string, never>, ack: (reply: CreateRoomAck) => void) => void;
  /** Joins a room of at most two members (your partner hears `userJoined`); leaves the room
   *  you were in first. Joining your own room again returns the history again (and counts
   *  as a failed join). */
  joinRoom: (payload: { code: RoomCode | number }, ack: (reply: JoinRoomAck) => void) => void;
  /** Sends `text` to both members of your room. */
  sendMessage: (
    payload: { code: RoomCode | number; text: string },
    ack: (reply: SendMessageAck) => void,
  ) => void;
  /** Leaves your room for good (your partner hears `userLeft`); an empty room is deleted. */
  leaveRoom: (payload: { code: RoomCode | number }, ack: (reply: LeaveRoomAck) => void) => void;
}

/** What the server tells a member of a room. */
export interface ServerToClientEvents {
  /** A member sent a message (the sender gets it too). */
  newMessage: (message: ChatMessage) => void;
  /** The other member joined, or came back after a drop (same id). */
  userJoined: (event: { userId: string }) => void;
  /** The other member left, disconnected or dropped. */
  userLeft: (event: { userId: string }) => void;
  /** The room's time is up: it is gone with its messages. */
  roomExpired: (event: Record<string, never>) => void;
  /** You came back after a drop (connection state recovery) and your room is not yours any
   *  more: your seat was taken (`Room full`), or the room, with every member away, made way
   *  for a new one at `--max-rooms` (`Server busy`). Your socket is back, the room is not. */
  roomUnavailable: (event: { code: RoomCode; error: RoomUnavailableError }) => void;
}
