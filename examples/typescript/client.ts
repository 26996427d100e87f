// A pairchat client in TypeScript: socket.io-client 4.8 typed with the chat's contract
// (pairchat.d.ts). It creates a room or joins one, says hello, and reports everything the server
// tells it. Every ack is a union; each refusal is narrowed to the texts that request can get, and
// the `switch`es are exhaustive: if the server gains an error, `tsc` points here.
//
// Type-checked by `cargo test --test typings` (`tsc -p examples/typescript --noEmit`).

import { io, type Socket } from "socket.io-client";

import type {
  ChatMessage,
  ClientToServerEvents,
  JoinRoomError,
  LeaveRoomError,
  RoomCode,
  SendMessageError,
  ServerToClientEvents,
} from "./pairchat";

type ChatSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** How long to wait for an ack: past it, `emitWithAck` rejects ("operation has timed out"). */
const ACK_TIMEOUT_MS = 5000;

/** Connects to `url` and reports every server event. */
export function connect(url: string): ChatSocket {
  // The timeout is an option rather than `socket.timeout(ms).emitWithAck(…)`, whose reply
  // socket.io-client 4.8 types as `any` (socket.io#4925): plain `emitWithAck` keeps it typed.
  const socket: ChatSocket = io(url, { ackTimeout: ACK_TIMEOUT_MS });
  const mine = (m: ChatMessage) => (m.sender === socket.id ? "me" : "partner");

  socket.on("newMessage", (m) => {
    console.log(`${mine(m)} at ${new Date(m.timestamp).toISOString()}: ${m.text}`);
  });
  socket.on("userJoined", ({ userId }) => console.log("partner joined:", userId));
  socket.on("userLeft", ({ userId }) => console.log("partner left:", userId));
  socket.on("roomExpired", () => console.log("the room has expired"));
  socket.on("roomUnavailable", ({ code, error }) => {
    switch (error) {
      case "Room full":
        console.log(`someone took my seat in ${code} while I was away`);
        break;
      case "Server busy":
        console.log(`room ${code} made way for a new one while I was away`);
        break;
      default:
        unreachable(error);
    }
  });
  return socket;
}

/** Creates a room and returns its code, or null when the server is full. */
export async function createRoom(socket: ChatSocket): Promise<RoomCode | null> {
  const reply = await socket.emitWithAck("createRoom", {});
  if (reply.error) {
    // The only refusal: "Server busy". The room we were in (if any) is still ours.
    console.warn(`createRoom: ${reply.error}, retry later`);
    return null;
  }
  return reply.code;
}

/** Joins a room; returns its history, oldest first, or null when refused. */
export async function joinRoom(
  socket: ChatSocket,
  code: RoomCode,
): Promise<ChatMessage[] | null> {
  const reply = await socket.emitWithAck("joinRoom", { code });
  if (reply.error !== undefined) {
    console.warn(`joinRoom: ${explainJoin(reply.error)}`);
    return null;
  }
  return reply.messages;
}

/** Sends a message; true once the server took it (it comes back as `newMessage`). */
export async function sendMessage(socket: ChatSocket, code: RoomCode, text: string) {
  const reply = await socket.emitWithAck("sendMessage", { code, text });
  if (reply.success) return true;
  console.warn(`sendMessage: ${explainSend(reply.error)}`);
  return false;
}

/** Leaves a room (an "end chat" button). */
export async function leaveRoom(socket: ChatSocket, code: RoomCode) {
  const reply = await socket.emitWithAck("leaveRoom", { code });
  if (reply.error) console.warn(`leaveRoom: ${explainLeave(reply.error)}`);
}

function explainJoin(error: JoinRoomError): string {
  switch (error) {
    case "Invalid room code":
      return "a room code is six digits";
    case "Room not found":
      return "no such room (it may have expired)";
    case "Room full":
      return "that room has two people already";
    case "Too many attempts, retry later":
      return "too many wrong codes: wait a minute";
    case "Server busy":
      return "the server is busy: try again in a moment";
    default:
      return unreachable(error);
  }
}

function explainSend(error: SendMessageError): string {
  switch (error) {
    case "Invalid room code":
    case "Room not found":
    case "Not a member of this room":
      return "you are not in that room any more";
    case "Message text must be a string":
    case "Message text is empty":
      return "write something first";
    case "Message text is too long":
      return "shorten your message";
    case "Server busy":
      return "the server is busy: try again in a moment";
    case "Rate limited":
      return "slow down";
    default:
      return unreachable(error);
  }
}

function explainLeave(error: LeaveRoomError): string {
  switch (error) {
    case "Invalid room code":
    case "Room not found":
    case "Not a member of this room":
      return "you were not in that room";
    default:
      return unreachable(error);
  }
}

/** Compiles only when every case above is handled. */
function unreachable(value: never): never {
  throw new Error(`unexpected: ${String(value)}`);
}

/** Person A: `demo(url)` creates a room; person B: `demo(url, "483920")` joins it. */
export async function demo(url: string, code?: RoomCode): Promise<ChatSocket | null> {
  const socket = connect(url);
  let room: RoomCode | null = null;
  if (code === undefined) {
    room = await createRoom(socket);
    if (room !== null) console.log("share this code:", room);
  } else {
    const history = await joinRoom(socket, code);
    if (history !== null) room = code;
    for (const m of history ?? []) console.log(`earlier, ${m.sender}: ${m.text}`);
  }
  if (room === null) {
    socket.disconnect();
    return null;
  }
  await sendMessage(socket, room, "hello");
  return socket;
}
